// pilot dashboard: reads the server's JSON and builds the page.
// Job names, labels, commands and log lines are user data: they only ever enter the
// page as text nodes (never innerHTML), so "<script>" in a job name shows as text.
'use strict';

const REFRESH_MS = Number(document.querySelector('meta[name="pilot-refresh"]').content) * 1000;
const STATES = ['pending', 'ready', 'queued', 'running', 'succeeded', 'failed', 'blocked', 'cancelled'];
// Mirrors executor/report/palette.py: done = final = FINAL_STATES, and a bar has one
// segment per BAR_STATES state (colours in pilot.css), never one green "done".
const FINAL_STATES = ['succeeded', 'failed', 'blocked', 'cancelled'];
const BAR_STATES = [...FINAL_STATES, 'running', 'queued'];
const FIGURES = [
  ['gantt', 'Timeline: jobs per pilot'],
  ['busy', 'Running jobs and live pilots'],
  ['runtime', 'Runtime per label'],
  ['memory', 'Peak memory per label'],
];
let timer = null;

// el('td', {class: 'n'}, 'text', otherNode): attributes and children, children as text.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) node.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function age(then, now) {
  if (!then) return '-';
  const s = Math.max(0, now - then);
  if (s < 60) return `${s.toFixed(0)}s ago`;
  if (s < 3600) return `${(s / 60).toFixed(0)}m ago`;
  if (s < 86400) return `${(s / 3600).toFixed(1)}h ago`;
  return `${(s / 86400).toFixed(1)}d ago`;
}

function doneOf(counts) {
  return FINAL_STATES.reduce((n, s) => n + (counts[s] || 0), 0);
}

// counts: jobs per state; the part no segment covers is the jobs still waiting.
function bar(counts, total) {
  const segments = BAR_STATES.filter((s) => counts[s]).map((s) => {
    const segment = el('span', {'data-state': s, title: `${counts[s]} ${s}`});
    segment.style.width = `${(100 * counts[s]) / total}%`;
    return segment;
  });
  return el('span', {class: 'bar'}, ...segments);
}

async function getJSON(url) {
  const response = await fetch(url, {cache: 'no-store'});
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function runLink(id) {
  const link = el('a', {class: 'run'}, id);
  link.href = '#' + encodeURIComponent(id);
  return link;
}

function runsTable(data) {
  const head = el('tr', {}, ...['run', 'name', 'owner', 'host', 'site', 'state', 'progress',
    'failed', 'started'].map((h) => el('th', {}, h)));
  const rows = data.runs.map((r) => el('tr', {'data-run': r.run},
    el('td', {}, runLink(r.run)), el('td', {}, r.name), el('td', {}, r.owner),
    el('td', {}, r.host), el('td', {}, r.site),
    el('td', {class: `state-${r.state}`}, r.state),
    el('td', {class: 'n'}, bar(r.jobs, r.progress.total),
      ` ${r.progress.done}/${r.progress.total}`),
    el('td', {class: 'n'}, r.jobs.failed + r.jobs.blocked),
    el('td', {}, age(r.created, data.now))));
  return el('table', {id: 'runs'}, el('thead', {}, head), el('tbody', {}, ...rows));
}

function labelTable(labels) {
  const head = el('tr', {}, el('th', {}, 'label'),
    ...STATES.map((s) => el('th', {class: 'n'}, s)), el('th', {class: 'n'}, 'expected'),
    el('th', {}, 'progress'));
  const rows = Object.entries(labels).map(([label, counts]) => {
    const total = STATES.reduce((n, s) => n + (counts[s] || 0), 0);
    const done = doneOf(counts);
    return el('tr', {'data-label': label}, el('td', {}, label),
      ...STATES.map((s) => el('td', {class: counts[s] ? `n state-${s}` : 'n zero',
        'data-state': s}, counts[s] || 0)),
      el('td', {class: 'n'}, total), el('td', {}, bar(counts, total), ` ${done}/${total}`));
  });
  return el('table', {id: 'labels'}, el('thead', {}, head), el('tbody', {}, ...rows));
}

function pilotTable(run) {
  if (!run.pilots.length) return el('p', {class: 'note'}, 'no pilot has run a job yet');
  const head = el('tr', {}, ...['pilot', 'host', 'attempts', 'running now', 'first job',
    'last activity'].map((h) => el('th', {}, h)));
  const rows = run.pilots.map((p) => el('tr', {}, el('td', {}, p.block_id),
    el('td', {}, p.host || '-'), el('td', {class: 'n'}, p.attempts),
    el('td', {class: 'n'}, p.running || 0), el('td', {}, age(p.start, run.now)),
    el('td', {}, age(p.end, run.now))));
  const note = run.pilot_source === 'pilots' ? null
    : el('p', {class: 'note'}, 'pilots derived from the jobs they ran');
  const efficiency = el('p', {class: 'note', id: 'efficiency'}, run.efficiency || '');
  return el('div', {}, el('table', {id: 'pilots'}, el('thead', {}, head),
    el('tbody', {}, ...rows)), efficiency, note);
}

// Each group: failed for good (count, jobs) and recovered on a retry (recovered,
// recovered_jobs), as in `pilot report --json`; the example carries message and stderr.
function failures(run) {
  const failed = run.failures.some((g) => g.count);
  const none = failed ? null : el('p', {class: 'state-succeeded'}, 'no failed jobs');
  return el('div', {id: 'failures'}, none, ...run.failures.map((g) => {
    const names = [...g.jobs, ...g.recovered_jobs.map((name) => `${name} (recovered)`)];
    const more = g.count + g.recovered - names.length;
    const example = g.example;
    const which = example.recovered
      ? `${example.job} (attempt ${example.attempts}, recovered)` : example.job;
    const labels = (g.labels.length === 1 ? 'label ' : 'labels ') + g.labels.join(', ');
    return el('div', {class: 'failure', 'data-cause': g.cause},
      el('h3', {}, el('span', {class: g.count ? 'state-failed' : 'state-blocked'},
        `${g.count + g.recovered} × ${g.cause}`), ` in ${labels}`),
      g.recovered ? el('p', {class: 'meta recovered'}, `${g.count} failed for good, `
        + `${g.recovered} recovered (succeeded on a later attempt)`) : null,
      el('p', {class: 'meta'}, 'jobs: ' + names.join(', ') + (more ? ` and ${more} more` : '')),
      example.message ? el('p', {class: 'meta'}, example.message) : null,
      example.stderr_tail.length ? el('p', {class: 'meta'}, `stderr of ${which}, last lines:`)
        : null,
      example.stderr_tail.length ? el('pre', {class: 'log'}, example.stderr_tail.join('\n'))
        : null,
      // One line, as `pilot report` prints it: `bash .../repro/<job>.attempt-<n>.sh`.
      g.reproduce ? el('p', {class: 'meta'}, `reproduce ${which}:`) : null,
      g.reproduce ? el('pre', {class: 'log reproduce'}, g.reproduce) : null);
  }));
}

function figureSlots() {
  return FIGURES.flatMap(([name, title]) => [el('h2', {}, title),
    el('div', {class: 'figure', id: `figure-${name}`})]);
}

async function drawFigures(id) {
  const figures = await getJSON(`/api/runs/${encodeURIComponent(id)}/figures`);
  for (const [name] of FIGURES) {
    const target = document.getElementById(`figure-${name}`);
    if (target && figures[name]) {
      Plotly.react(target, figures[name].data, figures[name].layout,
        {displaylogo: false, responsive: true});
    }
  }
}

async function showRun(id) {
  const run = await getJSON(`/api/runs/${encodeURIComponent(id)}`);
  document.getElementById('title').replaceChildren(`run ${run.run}: ${run.name} `,
    el('span', {id: 'run-state', class: `state-${run.state}`}, run.state));
  let details = document.getElementById('details');
  if (!details || details.dataset.run !== run.run) {
    // First view of this run: build the layout once, so plots update in place.
    details = el('div', {id: 'details', 'data-run': run.run});
    const main = document.getElementById('main');
    main.replaceChildren(el('p', {class: 'meta', id: 'facts'}),
      el('h2', {}, 'Jobs per label'), el('div', {id: 'label-slot'}),
      el('h2', {}, 'Pilots'), el('div', {id: 'pilot-slot'}),
      el('h2', {}, 'Failures by cause'), el('div', {id: 'failure-slot'}),
      ...figureSlots(), details);
  }
  const p = run.progress;
  document.getElementById('facts').replaceChildren(
    `owner ${run.owner} · host ${run.host} · site ${run.site} · started `
    + `${age(run.created, run.now)} · ${p.done}/${p.total} done, ${p.running} running, ${p.queued || 0} queued`,
    run.message ? el('span', {}, ` · note: ${run.message}`) : '');
  document.getElementById('label-slot').replaceChildren(labelTable(run.labels));
  document.getElementById('pilot-slot').replaceChildren(pilotTable(run));
  document.getElementById('failure-slot').replaceChildren(failures(run));
  await drawFigures(run.run);
  return run.state === 'running';
}

async function showRuns() {
  const data = await getJSON('/api/runs');
  document.getElementById('title').replaceChildren(`${data.runs.length} run(s)`);
  document.getElementById('db').textContent = data.db;
  document.getElementById('main').replaceChildren(data.runs.length ? runsTable(data)
    : el('p', {class: 'note'}, 'no runs in this database yet'));
  return data.runs.some((r) => r.state === 'running');
}

async function update() {
  clearTimeout(timer);
  const id = decodeURIComponent(location.hash.slice(1));
  let live = false;
  try {
    live = id ? await showRun(id) : await showRuns();
    document.getElementById('updated').textContent =
      `updated ${new Date().toLocaleTimeString()}` + (live ? ', refreshing' : '');
  } catch (error) {
    document.getElementById('updated').textContent = `cannot load: ${error.message}`;
    live = true;
  }
  // Poll while something is going; a finished run's page no longer changes.
  if (live) timer = setTimeout(update, REFRESH_MS);
}

window.addEventListener('hashchange', () => {
  document.getElementById('main').replaceChildren();
  update();
});
update();
