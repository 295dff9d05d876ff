def line(x):
    return 2.5 * x + 1
