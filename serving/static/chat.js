// The chat page of `payable serve`: pick a model, ask with retrieval, watch the answer stream in, check
// its citations against the contributions they came from, and see what the answer earned whom.
//
// Plain JavaScript on the server's own endpoints: /v1/models, /v1/chat/completions (stream=true, read
// with fetch + ReadableStream and parsed as server-sent events), /v1/contributions/{id} and
// /v1/usage/{usage_event_id}/earnings. Contributions are data written by anyone: they are only ever
// inserted as text (textContent), never as HTML.
//
// A question in the URL runs by itself once the models are loaded (how the headless-browser test and the
// screenshot drive the page): /?model=dn-1&datanets=1&k=2&max_tokens=16&temperature=0&q=...
"use strict";

const USAGE_HEADER = "x-payable-usage-event";
const MARKER = /\[(\d+)\]/g;
const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const earlier = [];  // [{role, content}] of earlier turns, sent when "send earlier turns" is ticked
let turns = 0;

function setState(state, message = "", isError = false) {
  document.body.dataset.state = state;
  $("status").textContent = message;
  $("status").classList.toggle("error", isError);
}

function element(tag, attributes = {}, text = null) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== null) node.textContent = text;
  return node;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return (body.error && body.error.message) || `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

async function loadModels() {
  const response = await fetch("/v1/models");
  if (!response.ok) throw new Error(await errorMessage(response));
  const models = (await response.json()).data;
  const select = $("model");
  for (const model of models) {
    const label = model.datanet_id == null ? `${model.id} (base model)` : `${model.id} (datanet ${model.datanet_id})`;
    select.append(element("option", {value: model.id}, label));
  }
  const aliases = models.filter((m) => m.id.startsWith("dn-"));
  select.value = params.get("model") || (aliases[0] || models[0]).id;
  const chosen = params.has("datanets") ? params.get("datanets").split(",").map(Number)
    : [models.find((m) => m.id === select.value)?.datanet_id].filter((d) => d != null);
  const served = models.map((m) => m.datanet_id).filter((d) => d != null);
  const datanets = [...new Set([...served, ...chosen])].sort((a, b) => a - b);
  for (const id of datanets) {
    const box = element("input", {type: "checkbox", value: String(id), name: "datanet"});
    box.checked = chosen.includes(id);
    const label = element("label", {class: "inline"});
    label.append(box, ` dn-${id}`);
    $("datanets").append(label);
  }
  for (const [param, id] of [["k", "k"], ["max_tokens", "max-tokens"]]) {
    if (params.has(param)) $(id).value = params.get(param);
  }
}

function renderAnswer(node, text, turn) {
  // The answer as text, each inline marker [n] a link to the n-th citation of this turn.
  node.replaceChildren();
  let last = 0;
  for (const match of text.matchAll(MARKER)) {
    node.append(text.slice(last, match.index));
    node.append(element("a", {class: "marker", href: `#cite-${turn}-${match[1]}`}, match[0]));
    last = match.index + match[0].length;
  }
  node.append(text.slice(last));
}

function renderCitations(view, citations, turn) {
  // One entry per citation; returns the promises of their contributions' details.
  const title = view.querySelector(".citations-title");
  title.hidden = false;
  title.textContent = citations.length ? "Sources" : "No sources: nothing retrievable, or none fit the model's context";
  const list = view.querySelector(".citations");
  const details = [];
  for (const citation of citations) {
    const n = citation.marker.replace(/\D/g, "");
    const item = element("li", {class: "citation", id: `cite-${turn}-${n}`,
                                "data-contribution-id": String(citation.contribution_id)});
    const head = element("div", {class: "head"});
    head.append(element("span", {class: "marker"}, citation.marker),
                element("a", {href: `/v1/contributions/${citation.contribution_id}`, target: "_blank"},
                        `contribution #${citation.contribution_id}`),
                element("span", {class: "meta"}, `datanet ${citation.datanet_id} · dataset v${citation.dataset_version}` +
                        ` · score ${citation.score.toFixed(4)}`),
                element("span", {class: "verdict"}, "verdict …"));
    const contributor = element("div", {class: "meta"}, "contributor ");
    contributor.append(element("code", {}, citation.contributor));
    const used = element("blockquote", {class: "used"}, citation.text);
    item.append(head, contributor, used);
    list.append(item);
    details.push(loadContribution(item, citation.contribution_id));
  }
  return details;
}

async function loadContribution(item, id) {
  // The contribution behind a citation: its verdict, and its whole text (the citation shows the chunk used).
  const badge = item.querySelector(".verdict");
  const response = await fetch(`/v1/contributions/${id}`);
  if (!response.ok) {
    badge.textContent = await errorMessage(response);
    return;
  }
  const detail = await response.json();
  const verdict = detail.verdict;
  badge.textContent = verdict.reason ? `${verdict.status}: ${verdict.reason}` : verdict.status;
  badge.classList.add(verdict.status);
  badge.title = `verdict ${verdict.verdict_id}, from the ${verdict.source}` +
                (verdict.rules_version ? ` (rules ${verdict.rules_version})` : "");
  const full = element("details", {class: "full-text"});
  full.append(element("summary", {}, `full contribution (${detail.text.length} characters, ` +
                                     `block ${detail.block_number}, verdict ${verdict.verdict_id})`),
              element("blockquote", {}, detail.text));
  item.append(full);
}

function formatOpen(wei) {
  const value = BigInt(wei), unit = 10n ** 18n;
  const fraction = (value % unit).toString().padStart(18, "0").slice(0, 6).replace(/0+$/, "");
  return `${value / unit}${fraction ? "." + fraction : ""} OPEN`;
}

async function loadEarnings(view, usageEventId) {
  const box = view.querySelector(".earnings");
  if (!usageEventId) return;
  const response = await fetch(`/v1/usage/${usageEventId}/earnings`);
  if (!response.ok) {
    box.textContent = `earnings: ${await errorMessage(response)}`;
    return;
  }
  const earned = await response.json();
  box.dataset.status = earned.status;
  box.replaceChildren(element("span", {}, `usage event ${usageEventId}: `));
  if (earned.status !== "paid") {
    box.append("not paid yet (a usage epoch pays it)");
    return;
  }
  const table = element("table");
  table.append(element("tr"));
  for (const title of ["account", "role", "contribution", "earned", "epoch"]) {
    table.rows[0].append(element("th", {}, title));
  }
  for (const row of earned.earnings) {
    const tr = element("tr");
    for (const cell of [row.account, row.role, row.contribution_id ?? "", formatOpen(row.amount), row.epoch_id]) {
      tr.append(element("td", {}, String(cell)));
    }
    table.append(tr);
  }
  box.append(table);
}

async function* serverSentEvents(body) {
  // The `data:` payloads of a text/event-stream, one per event, as they arrive.
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += value;
    const events = buffer.split(/\r\n\r\n|\n\n|\r\r/);
    buffer = events.pop();
    for (const event of events) {
      const data = event.split(/\r\n|\n|\r/).filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, "")).join("\n");
      if (data) yield data;
    }
  }
}

function requestBody(question) {
  const datanets = [...document.querySelectorAll("input[name=datanet]:checked")].map((box) => Number(box.value));
  const messages = [...($("history").checked ? earlier : []), {role: "user", content: question}];
  const body = {model: $("model").value, messages, stream: true, max_tokens: Number($("max-tokens").value),
                temperature: Number(params.get("temperature") ?? 0.7)};
  if (datanets.length) body.retrieval = {datanets, k: Number($("k").value)};
  return body;
}

async function ask(question) {
  const turn = ++turns;
  const view = $("turn-template").content.firstElementChild.cloneNode(true);
  view.dataset.turn = String(turn);
  view.querySelector(".question").textContent = question;
  $("conversation").prepend(view);
  const answer = view.querySelector(".answer");
  $("send").disabled = true;
  setState("streaming", "answering…");
  let text = "", chunks = 0, details = [];
  try {
    const response = await fetch("/v1/chat/completions", {method: "POST", headers: {"Content-Type": "application/json"},
                                                          body: JSON.stringify(requestBody(question))});
    if (!response.ok) throw new Error(await errorMessage(response));
    const usageEventId = response.headers.get(USAGE_HEADER);
    view.dataset.usageEvent = usageEventId || "";
    for await (const data of serverSentEvents(response.body)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.citations) details = renderCitations(view, chunk.citations, turn);
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta.content;
      if (delta) {
        text += delta;
        answer.dataset.chunks = String(++chunks);
        renderAnswer(answer, text, turn);
      }
    }
    earlier.push({role: "user", content: question}, {role: "assistant", content: text});
    await Promise.all([...details, loadEarnings(view, usageEventId)]);
    setState("done", `answered in ${chunks} streamed chunks`);
  } catch (error) {
    answer.dataset.error = error.message;
    setState("error", error.message, true);
  } finally {
    $("send").disabled = false;
  }
}

$("ask").addEventListener("submit", (event) => {
  event.preventDefault();
  const question = $("question").value.trim();
  if (question) ask(question);
});

loadModels().then(() => {
  $("send").disabled = false;
  setState("ready");
  if (params.has("q")) {
    $("question").value = params.get("q");
    ask(params.get("q"));
  }
}, (error) => setState("error", `cannot list the models: ${error.message}`, true));
