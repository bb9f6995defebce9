"""``GET /``: a small page to try the model, generated from its input signature.

One typed field per input column (a decimal field for numeric columns, a text field with the
known levels as suggestions for text columns, a file picker for a binary column); the page posts
``dataframe_records`` JSON (or a multipart upload for files) to ``/invocations`` and shows the
prediction with one bar per class probability, or the server's one-line error (the server is the
one validator: a value that is not a number is sent as typed and the error names the field). No
framework, no external assets.
"""

from __future__ import annotations

import html

from deepspark.serving.rows import NUMERIC_TYPES, InputColumn

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:42rem;margin:2rem auto;padding:0 1rem}
label{display:block;margin:.5rem 0 .1rem;font-weight:600}input{width:100%;padding:.3rem}
button{margin-top:1rem;padding:.5rem 1.5rem}.bar{background:#4a7;height:1rem}
.row{display:grid;grid-template-columns:10rem 1fr 4rem;gap:.5rem;align-items:center}
#error{color:#b00}
"""

_SCRIPT = """
const form = document.getElementById('form');
form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const files = [...form.querySelectorAll('input[type=file]')].filter(i => i.files.length);
  let request;
  if (files.length) {
    const body = new FormData();
    body.append('file', files[0].files[0]);
    request = {method: 'POST', body};
  } else {
    const record = {};
    for (const input of form.querySelectorAll('input[data-column]')) {
      const value = input.value.trim();
      // A number field sends what does not parse as typed: the server names the bad field.
      const number = input.dataset.numeric === 'true' && value !== '' ? Number(value) : NaN;
      record[input.dataset.column] = value === '' ? null : Number.isFinite(number) ? number : value;
    }
    request = {method: 'POST', headers: {'Content-Type': 'application/json'},
               body: JSON.stringify({dataframe_records: [record]})};
  }
  const answer = await fetch('invocations', request);
  const document_ = await answer.json();
  const result = document.getElementById('result');
  const error = document.getElementById('error');
  result.innerHTML = ''; error.textContent = '';
  if (!answer.ok) { error.textContent = document_.message; return; }
  const row = document_.predictions[0];
  const title = document.createElement('h2');
  title.textContent = 'prediction: ' + row.prediction;
  result.appendChild(title);
  for (const [name, value] of Object.entries(row)) {
    if (!name.startsWith('probability_')) continue;
    const line = document.createElement('div');
    line.className = 'row';
    line.innerHTML = '<span></span><div><div class="bar"></div></div><span></span>';
    line.children[0].textContent = name.slice(12);
    line.children[1].firstChild.style.width = (100 * value).toFixed(1) + '%';
    line.children[2].textContent = (100 * value).toFixed(1) + '%';
    result.appendChild(line);
  }
});
"""


def try_page(
    columns: tuple[InputColumn, ...], *, title: str, levels: dict[str, list[str]] | None = None
) -> str:
    """The HTML page for a model with input ``columns``.

    Args:
        columns: The model's input signature.
        title: Shown as the heading (e.g. the task and target).
        levels: Known values of text columns, offered as suggestions.
    """
    levels = levels or {}
    fields = "\n".join(_field(column, levels.get(column.name, [])) for column in columns)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head>
<body><h1>{html.escape(title)}</h1>
<form id="form">
{fields}
<button type="submit">Predict</button>
</form>
<p id="error"></p><div id="result"></div>
<script>{_SCRIPT}</script>
</body></html>
"""


def _field(column: InputColumn, levels: list[str]) -> str:
    name = html.escape(column.name)
    label = f'<label for="f-{name}">{name}</label>'
    if column.type == "binary":
        return f'{label}<input id="f-{name}" type="file" accept="image/*">'
    if column.type in NUMERIC_TYPES:
        return (
            f'{label}<input id="f-{name}" data-column="{name}" data-numeric="true" type="text" '
            'inputmode="decimal" placeholder="number">'
        )
    options = "".join(f'<option value="{html.escape(str(level))}">' for level in levels)
    suggestions = f'<datalist id="l-{name}">{options}</datalist>' if levels else ""
    listed = f' list="l-{name}"' if levels else ""
    return f'{label}<input id="f-{name}" data-column="{name}" type="text"{listed}>{suggestions}'
