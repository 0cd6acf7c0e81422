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
    `<td>${{esc(r.key)}}</td><td class="status">${{esc(r.status)}} ${{r.attention ? '<span class="badge" title="' +
    esc(r.attention) + '">needs attention</span>' : ''}}</td><td>${{esc(r.progress)}}</td><td>${{esc(r.best)}}</td>` +
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
        badge = f' <span class="badge" title="{e["attention"]}">needs attention</span>' if r["attention"] else ""
        out.append(f'<tr data-key="{e["key"]}"><td><a href="/campaign/{e["key"]}">{e["name"]}</a></td><td>{e["key"]}</td>'
                   f'<td class="status">{e["status"]}{badge}</td><td>{e["progress"]}</td><td>{e["best"]}</td>'
                   f'<td>{e["last"]}</td></tr>')
    return "".join(out)


def campaign_page(key: str) -> str:
    """One campaign, live. `key` is already HTML-escaped."""
    body = f"""
<p><a href="/">all campaigns</a> <span id="live">connecting...</span></p>
<h1 id="name">{key}</h1>
<p><span class="status" id="status"></span> <span id="progress"></span> <span class="muted" id="stop"></span></p>
<p id="best"></p>
<h2>Now running</h2><table id="running"><thead><tr><th>trial</th><th>instrument</th><th>for</th><th>conditions</th></tr></thead><tbody></tbody></table>
<h2>Best so far</h2><div id="progress-plot" style="height:420px"></div>
<h2>Trials</h2><table id="trials"><thead><tr><th>trial</th><th>state</th><th>conditions</th><th>values</th></tr></thead><tbody></tbody></table>
<h2>Events</h2><table id="events"><thead><tr><th>time</th><th>event</th><th>trial</th><th>detail</th></tr></thead><tbody></tbody></table>
<script src="/static/plotly.min.js"></script>
<script>
const KEY = {json.dumps(key)};
window.closedloopLoadedAt = Date.now();  // a reload would reset it: tests check that updates never reload
window.closedloopUpdates = 0;
{_ESC_JS}
function pairs(o) {{ return Object.entries(o || {{}}).map(([k, v]) => `${{esc(k)}}=${{esc(v)}}`).join(' '); }}
function minutes(s) {{ return s < 90 ? `${{Math.round(s)}} s` : `${{(s / 60).toFixed(1)}} min`; }}
async function redraw() {{
  const s = await (await fetch('/api/campaign/' + encodeURI(KEY))).json();
  document.getElementById('name').textContent = s.name;
  document.getElementById('status').textContent = s.status;
  document.getElementById('progress').textContent = `${{s.results}} of ${{s.budget}} results`;
  document.getElementById('stop').textContent = s.stop_reason ? `stopped: ${{s.stop_reason}}` : '';
  document.getElementById('best').textContent = s.best ? 'best: ' + Object.entries(s.best.values).map(([k, v]) => `${{k}}=${{Number(v).toPrecision(4)}}`).join(', ') : 'no result yet';
  document.querySelector('#running tbody').innerHTML = s.running.map(r =>
    `<tr><td>${{r.trial}}</td><td>${{esc(r.instrument)}}</td><td>${{minutes(r.elapsed_s)}}</td><td>${{pairs(r.conditions)}}</td></tr>`).join('');
  document.querySelector('#trials tbody').innerHTML = s.trials.slice().reverse().map(t =>
    `<tr data-trial="${{t.trial}}"><td>${{t.trial}}</td><td>${{esc(t.state)}}</td><td>${{pairs(t.conditions)}}</td><td>${{pairs(t.values)}}</td></tr>`).join('');
  document.querySelector('#events tbody').innerHTML = s.events.slice().reverse().map(e =>
    `<tr><td>${{new Date(e.t * 1000).toLocaleTimeString()}}</td><td>${{esc(e.kind)}}</td><td>${{e.trial ?? ''}}</td><td>${{esc(e.detail)}}</td></tr>`).join('');
  if (s.progress) Plotly.react('progress-plot', s.progress.data, s.progress.layout, {{displaylogo: false, responsive: true}});
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
const stream = new EventSource('/api/campaign/' + encodeURI(KEY) + '/events');
stream.addEventListener('change', update);
stream.onopen = () => {{ document.getElementById('live').textContent = 'live'; }};
stream.onerror = () => {{ document.getElementById('live').textContent = 'reconnecting...'; }};
</script>"""
    return _document(f"closedloop: {key}", body)


_ESC_JS = """function esc(v) { return String(v ?? '').replace(/[&<>"']/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c])); }"""


def _document(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>'
            f"<body>{body}\n</body></html>\n")
