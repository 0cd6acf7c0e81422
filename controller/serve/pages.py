"""The dashboard's two pages: plain HTML with a small script each. The campaign page draws its state from
/api/campaign/KEY and redraws whenever the server-sent event stream says the campaign file changed; the
list page does the same for the list. No framework, no CDN: plotly's bundle comes from this server."""

from __future__ import annotations

import html
import json
from typing import Any

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:0.9em}td,th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}
.badge{background:#d9480f;color:white;border-radius:4px;padding:1px 6px;font-size:0.85em}
.status{font-weight:bold}.muted{color:#777}#live{font-size:0.8em;color:#2b8a3e}
#operator-panel{border:1px solid #ccc;border-radius:6px;padding:0.6em 1em;margin:1em 0;background:#f8f9fa}
.approval{border:2px solid #d9480f;border-radius:6px;padding:0.5em 1em;margin:0.6em 0;background:#fff4e6}
.error{color:#c92a2a;font-size:0.9em;margin-left:0.5em}.sent{color:#2b8a3e;margin-left:0.5em}
button{margin-right:0.4em}#held{color:#d9480f;font-weight:bold}
"""


def list_page(rows: list[dict[str, Any]]) -> str:
    """Every served campaign; the table refreshes itself every few seconds."""
    body = f"""
<h1>closedloop campaigns</h1>
<table id="campaigns"><thead><tr><th>campaign</th><th>file</th><th>status</th><th>results</th><th>best</th>
<th>last activity</th></tr></thead><tbody>{_rows(rows)}</tbody></table>
<script>
async function refresh() {{
  const rows = await (await fetch('/api/campaigns')).json();
  document.querySelector('#campaigns tbody').innerHTML = rows.map(r =>
    `<tr data-key="${{esc(r.key)}}"><td><a href="/campaign/${{encodeURI(r.key)}}">${{esc(r.name)}}</a></td>` +
    `<td>${{esc(r.key)}}</td><td class="status">${{esc(r.status)}} ${{r.attention ? '<span class="badge">' +
    esc(r.attention) + '</span>' : ''}}</td><td>${{esc(r.progress)}}</td><td>${{esc(r.best)}}</td>` +
    `<td>${{esc(r.last)}}</td></tr>`).join('');
}}
{_ESC_JS}
setInterval(refresh, 2000);
</script>"""
    return _document("closedloop campaigns", body)


def _rows(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        e = {k: html.escape(str(v)) for k, v in r.items()}
        badge = f' <span class="badge">{e["attention"]}</span>' if r["attention"] else ""
        out.append(f'<tr data-key="{e["key"]}"><td><a href="/campaign/{e["key"]}">{e["name"]}</a></td><td>{e["key"]}</td>'
                   f'<td class="status">{e["status"]}{badge}</td><td>{e["progress"]}</td><td>{e["best"]}</td>'
                   f'<td>{e["last"]}</td></tr>')
    return "".join(out)


def campaign_page(key: str) -> str:
    """One campaign, live. `key` as given (escaped here: in the HTML for the heading, as JSON in the script)."""
    body = f"""
<p><a href="/">all campaigns</a> <span id="live">connecting...</span></p>
<h1 id="name">{html.escape(key)}</h1>
<p><span class="status" id="status"></span> <span id="progress"></span> <span class="muted" id="stop"></span></p>
<p id="best"></p>
{_OPERATOR_PANEL}
<h2>Now running</h2><table id="running"><thead><tr><th>trial</th><th>instrument (step)</th><th>for</th><th>usually takes</th><th>conditions</th></tr></thead><tbody></tbody></table>
<h2>Best so far</h2><div id="progress-plot" style="height:420px"></div>
<div id="figures"></div>
<details id="model"><summary><b>The model's view</b> <span class="muted">(fits a model when opened, again after each new result)</span></summary>
<p class="muted" id="model-notes"></p><div id="model-figures"></div></details>
<h2>Trials</h2><table id="trials"><thead><tr><th>trial</th><th>state</th><th>conditions</th><th>values</th></tr></thead><tbody></tbody></table>
<h2>Events</h2><table id="events"><thead><tr><th>time</th><th>event</th><th>trial</th><th>detail</th></tr></thead><tbody></tbody></table>
<script src="/static/plotly.min.js"></script>
<script>
const KEY = {_script_json(key)};
window.closedloopLoadedAt = Date.now();  // a reload would reset it: tests check that updates never reload
window.closedloopUpdates = 0;
{_ESC_JS}
function pairs(o) {{ return Object.entries(o || {{}}).map(([k, v]) => `${{esc(k)}}=${{esc(v)}}`).join(' '); }}
function minutes(s) {{ return s < 90 ? `${{Math.round(s)}} s` : `${{(s / 60).toFixed(1)}} min`; }}
let marker = '', figuresVersion = null;  // the campaign file's marker of the last change event: the state asked for is at least that new
async function redraw() {{
  const s = await (await fetch('/api/campaign/' + encodeURI(KEY) + (marker ? '?v=' + marker : ''))).json();
  document.getElementById('name').textContent = s.name;
  document.getElementById('status').textContent = s.status;
  document.getElementById('progress').textContent = `${{s.results}} of ${{s.budget}} results`;
  document.getElementById('stop').textContent = s.stop_reason ? `stopped: ${{s.stop_reason}}` : '';
  document.getElementById('best').textContent = s.best ? 'best: ' + Object.entries(s.best.values).map(([k, v]) => `${{k}}=${{Number(v).toPrecision(4)}}`).join(', ') : 'no result yet';
  document.querySelector('#running tbody').innerHTML = s.running.map(r =>
    `<tr><td>${{esc(r.trial)}}</td><td>${{esc(r.instrument)}}${{r.step ? ' (' + esc(r.step) + ')' : ''}}</td><td>${{minutes(r.elapsed_s)}}</td>` +
    `<td>${{r.expected_s == null ? '-' : minutes(r.expected_s)}}</td><td>${{pairs(r.conditions)}}</td></tr>`).join('');
  document.querySelector('#trials tbody').innerHTML = s.trials.slice().reverse().map(t =>
    `<tr data-trial="${{esc(t.trial)}}"><td>${{esc(t.trial)}}</td><td>${{esc(t.state)}}</td><td>${{pairs(t.conditions)}}</td><td>${{pairs(t.values)}}</td></tr>`).join('');
  document.querySelector('#events tbody').innerHTML = s.events.slice().reverse().map(e =>
    `<tr><td>${{new Date(e.t * 1000).toLocaleTimeString()}}</td><td>${{esc(e.kind)}}</td><td>${{esc(e.trial)}}</td><td>${{esc(e.detail)}}</td></tr>`).join('');
  if (s.figures_version !== figuresVersion) {{  // figures change only with a new result: redrawn only then
    figuresVersion = s.figures_version;
    if (s.progress) Plotly.react('progress-plot', s.progress.data, s.progress.layout, {{displaylogo: false, responsive: true}});
    drawFigures('figures', s.figures);
  }}
  if (document.getElementById('model').open && s.results !== modelResults) drawModel();
  drawOperator(s);
  window.closedloopUpdates += 1;
  document.body.dataset.results = s.results;
}}
// One redraw at a time: a change arriving during a redraw is drawn once, right after it.
let drawing = false, again = false;
async function update() {{
  if (drawing) {{ again = true; return; }}
  drawing = true;
  try {{ do {{ again = false; await redraw(); }} while (again); }} catch (e) {{ console.error(e); }}
  drawing = false;
}}
{_FIGURES_JS}
{_OPERATOR_JS}
const stream = new EventSource('/api/campaign/' + encodeURI(KEY) + '/events');
stream.addEventListener('change', e => {{ marker = e.data; update(); }});
stream.onopen = () => {{ document.getElementById('live').textContent = 'live'; }};
stream.onerror = () => {{ document.getElementById('live').textContent = 'reconnecting...'; }};
</script>"""
    return _document(f"closedloop: {key}", body)


# The report's figures on a live page: one container per figure id, made the first time it is drawn and
# updated in place (Plotly.react) after that.
_FIGURES_JS = """
function drawFigures(where, figures) {
  const box = document.getElementById(where);
  for (const f of figures) {
    const id = `${where}-${String(f.id).replace(/[^a-z0-9-]/gi, '')}`;
    if (!document.getElementById(id)) {
      box.insertAdjacentHTML('beforeend', `<h2>${esc(f.title)}</h2><div id="${id}"></div><p class="muted" id="${id}-caption"></p>`);
    }
    document.getElementById(`${id}-caption`).textContent = f.caption;
    if (f.figure) Plotly.react(id, f.figure.data, f.figure.layout, {displaylogo: false, responsive: true});
  }
}
let modelResults = null;
async function drawModel() {
  const m = await (await fetch('/api/campaign/' + encodeURI(KEY) + '/model')).json();
  modelResults = m.results;
  document.getElementById('model-notes').textContent = m.notes.join(' ');
  drawFigures('model-figures', m.figures);
}
document.getElementById('model').addEventListener('toggle', e => { if (e.target.open) drawModel(); });
"""

# The operator's part of a campaign page: who is at the controls, pause/resume/abort, and a form per proposal
# waiting for a decision on the dashboard. Forms are redrawn only when what waits changes, so a redraw never
# wipes what the operator is typing.
_OPERATOR_PANEL = """
<div id="operator-panel">
<p><span id="control-state" class="muted"></span>
<span id="login" hidden>control token: <input id="token" type="password" size="28" autocomplete="off">
<button id="unlock">unlock control</button><span class="error" id="login-error"></span></span></p>
<p id="operator-row" hidden>you are: <input id="operator" size="16" placeholder="your name">
<button id="pause">pause</button><button id="resume">resume</button><button id="abort">abort</button>
<span id="held"></span><span class="error" id="control-error"></span></p>
<div id="pending"></div>
<details><summary class="muted">requests from the dashboard</summary><table id="requests"><tbody></tbody></table></details>
</div>"""

_OPERATOR_JS = """
const operatorInput = document.getElementById('operator');
operatorInput.value = localStorage.getItem('closedloopOperator') || '';
operatorInput.addEventListener('change', () => localStorage.setItem('closedloopOperator', operatorInput.value));
async function post(url, body) {
  const r = await fetch(url, {method: 'POST', credentials: 'same-origin', body: JSON.stringify(body),
    headers: {'Content-Type': 'application/json', 'X-Closedloop-Control': '1'}});
  let reply = {};
  try { reply = await r.json(); } catch (e) {}
  return {ok: r.ok, status: r.status, ...reply};
}
function send(body) {
  return post('/api/campaign/' + encodeURI(KEY) + '/control', {...body, operator: operatorInput.value});
}
document.getElementById('unlock').onclick = async () => {
  const r = await post('/api/login', {token: document.getElementById('token').value});
  document.getElementById('login-error').textContent = r.ok ? '' : r.error;
  if (r.ok) update();
};
async function simple(action) {
  const r = await send({action});
  document.getElementById('control-error').textContent = r.ok ? '' : r.error;
}
document.getElementById('pause').onclick = () => simple('pause');
document.getElementById('resume').onclick = () => simple('resume');
document.getElementById('abort').onclick = () => {
  if (confirm('Abort the campaign? Running trials are stopped and every instrument is put in its safe state; ' +
              'closedloop resume continues it later.')) simple('abort');
};
let pendingKey = null;
// A proposed value is shown to six significant digits; a field left as shown is not part of an edit, so the
// proposal's exact value is what runs unless the operator changes it.
function shown(value) { return typeof value === 'number' ? String(Number(value.toPrecision(6))) : String(value); }
function field(p, value) {
  const id = `value-${esc(p.name)}`, attrs = `id="${id}" data-field="${esc(p.name)}" data-shown="${esc(shown(value))}"`;
  if (p.kind === 'choice')
    return `<select ${attrs}>` + p.values.map(v =>
      `<option${String(v) === String(value) ? ' selected' : ''}>${esc(v)}</option>`).join('') + '</select>';
  const range = p.low !== undefined ? ` <span class="muted">${esc(p.low)} to ${esc(p.high)} ${esc(p.unit)}</span>` : '';
  return `<input ${attrs} value="${esc(shown(value))}" size="12">${range}`;
}
function approvalForm(a, parameters, control) {
  const where = a.where === 'dashboard' ? '' : ` <span class="muted">(waits for a decision at the ${esc(a.where)})</span>`;
  const rows = parameters.filter(p => p.name in a.conditions).map(p =>
    `<tr><td>${esc(p.name)}</td><td>${field(p, a.conditions[p.name])}` +
    `<span class="error" data-error="${esc(p.name)}"></span></td></tr>`).join('');
  const refusal = a.refusal ? `<p class="error">the last edit was refused: ${esc(a.refusal)}</p>` : '';
  const buttons = control && a.where === 'dashboard'
    ? `<button data-act="accept">accept</button><button data-act="edit">apply edit</button>` +
      `<button data-act="skip">skip</button><span class="error" data-error="_"></span><span class="sent"></span>` : '';
  return `<div class="approval" data-trial="${esc(a.trial)}"><b>trial ${esc(a.trial)} waits for approval</b>${where}` +
         `${refusal}<table>${rows}</table>${buttons}</div>`;
}
async function decide(form, action) {
  const trial = Number(form.dataset.trial);
  form.querySelectorAll('.error').forEach(e => { e.textContent = ''; });
  const body = {action, trial};
  if (action === 'edit') {
    body.values = {};
    form.querySelectorAll('[data-field]').forEach(i => { if (i.value !== i.dataset.shown) body.values[i.dataset.field] = i.value; });
  }
  const r = await send(body);
  if (r.ok) { form.querySelector('.sent').textContent = `${action} sent; the campaign takes it within a second`; return; }
  const fields = r.fields || {};
  if (!Object.keys(fields).length) fields['_'] = r.error;
  for (const [name, message] of Object.entries(fields)) {
    const spot = form.querySelector(`[data-error="${CSS.escape(name)}"]`) || form.querySelector('[data-error="_"]');
    if (spot) spot.textContent = message;
  }
}
function drawOperator(s) {
  const o = s.operator, control = s.control && o.running;
  document.getElementById('control-state').textContent = s.view_only ? 'view only (control is off)'
    : !s.control ? 'view only: enter the control token to approve, pause or abort'
    : o.running ? 'control: on' : 'control: on (the campaign is not running; nothing to control)';
  document.getElementById('login').hidden = s.control || s.view_only;
  document.getElementById('operator-row').hidden = !control;
  // A pause clicked while a proposal waits is taken once that proposal is decided: say so meanwhile.
  const asked = o.requests.find(r => r.outcome === null && (r.action === 'pause' || r.action === 'resume'));
  document.getElementById('control-error').textContent = o.control_error || '';
  document.getElementById('held').textContent = asked ? `${asked.action} requested: the campaign takes it ` +
    (o.pending.length ? 'once the proposal waiting is decided' : 'within a second')
    : o.held_by ? `paused by ${o.held_by}: no new trial starts` : '';
  document.getElementById('pause').disabled = !!o.held_by;
  document.getElementById('resume').disabled = !o.held_by;
  const key = JSON.stringify([o.pending, control]);
  if (key !== pendingKey) {
    pendingKey = key;
    const box = document.getElementById('pending');
    box.innerHTML = o.pending.map(a => approvalForm(a, o.parameters, control)).join('');
    box.querySelectorAll('.approval').forEach(form => form.querySelectorAll('button[data-act]').forEach(b => {
      b.onclick = () => decide(form, b.dataset.act);
    }));
  }
  document.querySelector('#requests tbody').innerHTML = o.requests.map(r =>
    `<tr><td>${new Date(r.at * 1000).toLocaleTimeString()}</td><td>${esc(r.action)}${r.trial ? ' trial ' + esc(r.trial) : ''}` +
    `${r.edited ? ' ' + pairs(r.edited) : ''}</td><td>${esc(r.by)}</td><td>${esc(r.outcome ?? 'waiting for the campaign')}</td></tr>`).join('');
}
"""

def _script_json(value: object) -> str:
    """`value` as JSON inside a <script>: a `</script>` in it cannot end the script."""
    return json.dumps(value).replace("<", "\\u003c")


_ESC_JS = """function esc(v) { return String(v ?? '').replace(/[&<>"']/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c])); }"""


def _document(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>'
            f"<body>{body}\n</body></html>\n")
