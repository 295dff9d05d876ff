"""Functions the workflow names as "mypkg.fit:..."; they import the rest of mypkg."""

from mypkg.model import line


def fit(visit):
    return {"visit": visit, "slope": line(visit)}


def where():
    import mypkg

    return {"mypkg came from": mypkg.__file__}
