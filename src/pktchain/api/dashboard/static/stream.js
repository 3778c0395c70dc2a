// Server-sent events read with fetch, so that the API token travels in a header
// (EventSource cannot send one). Each event is {type, data}, data parsed as JSON.

export class Unauthorized extends Error {}

// Yields the events of one response until it ends; throws Unauthorized on a 401.
export async function* readEvents(url, token, signal) {
  const headers = { Accept: "text/event-stream" };
  if (token) headers["X-Auth-Token"] = token;
  const response = await fetch(url, { headers, signal, cache: "no-store" });
  if (response.status === 401) throw new Unauthorized("the API refused the token");
  if (!response.ok || !response.body) {
    throw new Error(`the stream answered ${response.status} ${response.statusText}`);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const parsed = parseBlock(block);
        if (parsed) yield parsed;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

// One event block: "event: TYPE" and "data: ..." lines (comments start with ":").
export function parseBlock(block) {
  let type = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") type = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  return { type, data: JSON.parse(data.join("\n")) };
}

// A GET of a data route with the token; throws Unauthorized on a 401.
export async function getJson(url, token) {
  const headers = { Accept: "application/json" };
  if (token) headers["X-Auth-Token"] = token;
  const response = await fetch(url, { headers, cache: "no-store" });
  if (response.status === 401) throw new Unauthorized("the API refused the token");
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  return response.json();
}
