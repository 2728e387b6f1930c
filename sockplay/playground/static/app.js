// sockplay playground: the page's whole logic. Plain ES2020, no library.
//
// Everything that comes from the server (peers, previews, details) is data:
// it reaches the DOM through textContent only, never as markup.
//
// The stream updates a model; the DOM is redrawn from the model at most once
// per animation frame, and only the parts marked dirty.
"use strict";

(() => {
  // Bounds the page keeps even before the server tells it its own.
  const DEFAULT_BOUNDS = {
    closedKept: 200, eventsPerConnection: 200, preview: 64, eventsPerUpdate: 200, updateInterval: 0.2,
  };
  // The most connections shown, whatever the server says (open ones included).
  const MAX_CONNECTIONS = 1000;
  // The most events held for one connection, whatever the server says.
  const MAX_EVENTS = 2000;
  // Milliseconds between two automatic switches of the selected connection.
  const FOLLOW_INTERVAL = 1000;
  // Milliseconds the "sampled" status stays after the last update that skipped events.
  const SAMPLED_HOLD = 2000;
  // Milliseconds before opening a new stream when the browser gave up on one.
  const REOPEN_DELAY = 2000;

  const $ = (id) => document.getElementById(id);

  const model = {
    server: null,
    bounds: DEFAULT_BOUNDS,
    clockOffset: 0, // server's clock minus ours, in seconds
    connections: new Map(), // id -> Summary
    events: new Map(), // id -> {list: [Event], earlier: n}
    stats: null,
    selected: null,
    lastSwitch: 0,
    pendingFollow: null,
    skippedRecent: 0,
    sampledUntil: 0,
    streamState: "connecting",
  };

  const dirty = { connections: new Set(), order: true, timeline: true, stats: true, status: true, ages: false };
  let frameRequested = false;

  function schedule() {
    if (!frameRequested) {
      frameRequested = true;
      requestAnimationFrame(render);
    }
  }

  // ---- formatting --------------------------------------------------------

  function plural(n, one, many) {
    return `${n} ${n === 1 ? one : many}`;
  }

  function formatTime(t) {
    if (t < 1) return `+${(t * 1000).toFixed(3)} ms`;
    return `+${t.toFixed(3)} s`;
  }

  function formatAge(seconds) {
    if (!(seconds >= 0)) return "";
    if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.floor(seconds % 60)} s`;
    return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  }

  function formatCount(n) {
    return typeof n === "number" ? n.toLocaleString("en-US") : "0";
  }

  function serverNow() {
    return Date.now() / 1000 + model.clockOffset;
  }

  const SERVER_LABELS = {
    connected: () => "connectionMade",
    state: (e) => `state: ${e.detail || "?"}`,
    chunk: (e) => `dataReceived: ${plural(e.size, "byte", "bytes")}`,
    message: (e) => `message complete: ${plural(e.size, "byte", "bytes")}`,
    partial: (e) => `waiting: ${plural(e.size, "byte", "bytes")} held`,
    reply: (e) => `reply written: ${plural(e.size, "byte", "bytes")}`,
    "half-close": () => "half-close sent",
    close: () => "close (both directions)",
    eof: () => "client's end of input",
    closed: (e) => `closed: ${e.detail || "connection lost"}`,
  };

  const CLIENT_LABELS = {
    connect: () => "client: connected",
    send: (e) => `client: sent ${plural(e.size, "byte", "bytes")}`,
    "half-close": () => "client: half-close sent",
    receive: (e) => `client: received ${plural(e.size, "byte", "bytes")}`,
    response: () => "client: printed",
    closed: () => "client: closed",
    error: (e) => `client: error${e.detail ? `: ${e.detail}` : ""}`,
  };

  function labelOf(event) {
    const table = event.side === "client" ? CLIENT_LABELS : SERVER_LABELS;
    const make = table[event.kind];
    return make ? make(event) : `${event.kind}${event.size ? `: ${plural(event.size, "byte", "bytes")}` : ""}`;
  }

  // Details already in the label, or that say nothing more.
  function detailShown(event) {
    if (!event.detail) return false;
    if (event.side === "server" && (event.kind === "state" || event.kind === "closed")) return false;
    if (event.side === "client" && event.kind === "error") return false;
    return true;
  }

  // ---- the model ---------------------------------------------------------

  function eventsOf(id) {
    let held = model.events.get(id);
    if (!held) {
      held = { list: [], earlier: 0 };
      model.events.set(id, held);
    }
    return held;
  }

  function eventCap() {
    return Math.min(MAX_EVENTS, Math.max(1, model.bounds.eventsPerConnection || DEFAULT_BOUNDS.eventsPerConnection));
  }

  function trimEvents(held) {
    const cap = eventCap();
    if (held.list.length > cap) {
      const cut = held.list.length - cap;
      held.list.splice(0, cut);
      held.earlier += cut;
    }
  }

  function addEvent(event) {
    const held = eventsOf(event.conn);
    const last = held.list.length ? held.list[held.list.length - 1].seq : -1;
    if (event.seq > last) {
      held.list.push(event);
    } else if (!held.list.some((e) => e.seq === event.seq)) {
      held.list.push(event);
      held.list.sort((a, b) => a.seq - b.seq);
    } else {
      return;
    }
    trimEvents(held);
    if (event.conn === model.selected) dirty.timeline = true;
  }

  function isClosed(summary) {
    return summary.state === "closed" || summary.closedAt != null;
  }

  // Store a summary; returns whether the connection is new to the page.
  function putConnection(summary) {
    const known = model.connections.has(summary.id);
    model.connections.set(summary.id, summary);
    dirty.connections.add(summary.id);
    if (!known) dirty.order = true;
    if (summary.id === model.selected) dirty.timeline = true;
    return !known;
  }

  function removeConnection(id) {
    if (!model.connections.delete(id)) return;
    model.events.delete(id);
    dirty.order = true;
    if (id === model.selected) dirty.timeline = true;
  }

  // Keep no more closed connections than the server keeps, and no more than
  // MAX_CONNECTIONS in all: the oldest closed ones go first.
  function pruneConnections() {
    const closedKept = model.bounds.closedKept || DEFAULT_BOUNDS.closedKept;
    const closed = [];
    for (const summary of model.connections.values()) {
      if (isClosed(summary)) closed.push(summary.id);
    }
    closed.sort((a, b) => a - b);
    let excess = Math.max(closed.length - closedKept, model.connections.size - MAX_CONNECTIONS);
    for (const id of closed) {
      if (excess <= 0) break;
      if (id !== model.selected) {
        removeConnection(id);
        excess -= 1;
      }
    }
    // Open connections beyond the cap: the oldest go (the server still has them).
    if (model.connections.size > MAX_CONNECTIONS) {
      const ids = [...model.connections.keys()].sort((a, b) => a - b);
      for (const id of ids.slice(0, model.connections.size - MAX_CONNECTIONS)) {
        if (id !== model.selected) removeConnection(id);
      }
    }
  }

  function noteNewConnection(id) {
    if (!$("follow-newest").checked) return;
    if (model.pendingFollow === null || id > model.pendingFollow) model.pendingFollow = id;
    followIfDue();
  }

  function followIfDue() {
    if (model.pendingFollow === null || !$("follow-newest").checked) return;
    const now = performance.now();
    if (now - model.lastSwitch < FOLLOW_INTERVAL && model.selected !== null) return;
    const id = model.pendingFollow;
    model.pendingFollow = null;
    if (model.connections.has(id) && id !== model.selected) {
      model.lastSwitch = now;
      select(id);
    }
  }

  function applyStats(stats, now) {
    if (stats) {
      model.stats = stats;
      dirty.stats = true;
    }
    if (typeof now === "number") model.clockOffset = now - Date.now() / 1000;
  }

  function onSnapshot(data) {
    model.server = data.server || null;
    model.bounds = Object.assign({}, DEFAULT_BOUNDS, data.bounds || {});
    applyStats(data.stats, data.now);
    const seen = new Set();
    let newest = null;
    for (const summary of data.connections || []) {
      seen.add(summary.id);
      if (putConnection(summary) && (newest === null || summary.id > newest)) newest = summary.id;
    }
    for (const id of [...model.connections.keys()]) {
      if (!seen.has(id)) removeConnection(id);
    }
    for (const held of model.events.values()) trimEvents(held);
    pruneConnections();
    setupServer();
    if (newest !== null) noteNewConnection(newest);
    // A snapshot after a slow stream: what was skipped is fetched again.
    if (model.selected !== null && hasGaps(model.selected)) fetchConnection(model.selected);
    dirty.order = true;
    dirty.timeline = true;
    schedule();
  }

  function onUpdate(data) {
    applyStats(data.stats, data.now);
    let newest = null;
    for (const summary of data.connections || []) {
      if (putConnection(summary) && (newest === null || summary.id > newest)) newest = summary.id;
    }
    for (const id of data.removed || []) removeConnection(id);
    for (const event of data.events || []) {
      if (model.connections.has(event.conn)) addEvent(event);
    }
    // After the events: a connection followed now has them already.
    if (newest !== null && model.connections.has(newest)) noteNewConnection(newest);
    if (data.skipped > 0) {
      const now = performance.now();
      if (now > model.sampledUntil) model.skippedRecent = 0;
      model.skippedRecent += data.skipped;
      model.sampledUntil = now + SAMPLED_HOLD;
      dirty.status = true;
      // Sampled events may leave gaps: the selected timeline is fetched whole.
      if (model.selected !== null && hasGaps(model.selected)) fetchConnection(model.selected);
    }
    pruneConnections();
    schedule();
  }

  // ---- the stream ----------------------------------------------------------

  let source = null;

  function setStream(state) {
    if (model.streamState !== state) {
      model.streamState = state;
      dirty.status = true;
      schedule();
    }
  }

  function parse(message) {
    try {
      return JSON.parse(message.data);
    } catch (error) {
      console.warn("playground: an event that is not JSON was ignored", error);
      return null;
    }
  }

  function openStream() {
    source = new EventSource("/api/events");
    source.addEventListener("open", () => setStream("live"));
    source.addEventListener("error", () => {
      setStream("reconnecting");
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (an answer that was not a stream): try again.
        source.close();
        setTimeout(openStream, REOPEN_DELAY);
      }
    });
    source.addEventListener("snapshot", (message) => {
      const data = parse(message);
      if (data) {
        setStream("live");
        onSnapshot(data);
      }
    });
    source.addEventListener("update", (message) => {
      const data = parse(message);
      if (data) {
        setStream("live");
        onUpdate(data);
      }
    });
  }

  // ---- selecting a connection ----------------------------------------------

  let fetchToken = 0;
  let scrollTop = false;
  let fetchTimer = null;

  function select(id) {
    if (model.selected === id) return;
    model.selected = id;
    for (const tr of rows.values()) tr.classList.toggle("selected", Number(tr.dataset.id) === id);
    dirty.timeline = true;
    scrollTop = true;
    if (hasGaps(id)) fetchConnection(id);
    schedule();
  }

  // Whether the page misses events of a connection that the server may
  // still keep: ones from before the page saw it, or skipped under load.
  function hasGaps(id) {
    const summary = model.connections.get(id);
    const held = model.events.get(id);
    if (!summary) return false;
    if (!held || held.list.length === 0) return summary.events > 0;
    const list = held.list;
    if (list[0].seq !== held.earlier) return true;
    if (list[list.length - 1].seq - list[0].seq + 1 !== list.length) return true;
    return typeof summary.events === "number" && list[list.length - 1].seq + 1 < summary.events;
  }

  // What the server kept of a connection: its events since before this page
  // saw them. Fetched at most once per animation frame-ish burst.
  function fetchConnection(id) {
    if (fetchTimer !== null) clearTimeout(fetchTimer);
    fetchTimer = setTimeout(() => {
      fetchTimer = null;
      if (id !== model.selected || !hasGaps(id)) return;
      const token = ++fetchToken;
      fetch(`/api/connections/${encodeURIComponent(id)}`, { headers: { Accept: "application/json" } })
        .then((response) => (response.ok ? response.json() : null))
        .then((data) => {
          if (!data || token !== fetchToken || !model.connections.has(id)) return;
          if (data.connection) putConnection(data.connection);
          const held = eventsOf(id);
          const fetched = Array.isArray(data.events) ? data.events : [];
          const lastFetched = fetched.length ? fetched[fetched.length - 1].seq : -1;
          const later = held.list.filter((e) => e.seq > lastFetched);
          held.list = fetched.concat(later);
          held.earlier = data.earlier || 0;
          trimEvents(held);
          if (id === model.selected) dirty.timeline = true;
          schedule();
        })
        .catch(() => {
          // The stream's status already says when the server is away.
        });
    }, 50);
  }

  // ---- the send panel ------------------------------------------------------

  const session = makeSession();
  let serverSetUp = false;
  let sendableCount = 0;
  let sending = false;

  function makeSession() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
    const bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function setupServer() {
    const server = model.server;
    if (!server) return;
    const info = [`framing ${server.framing}`, server.keepOpen ? "keep-open" : "one-shot"];
    if (server.hostname) info.push(`on ${server.hostname}`);
    if (server.pid) info.push(`pid ${server.pid}`);
    if (typeof server.idleTimeout === "number") info.push(`idle timeout ${server.idleTimeout} s`);
    $("server-info").textContent = `The server: ${info.join(", ")}.`;

    const choice = $("send-listener");
    const previous = choice.value;
    choice.replaceChildren();
    let sendable = 0;
    for (const listener of server.listeners || []) {
      const option = document.createElement("option");
      option.value = String(listener.index);
      option.textContent = listener.name + (listener.sendable ? "" : ` (${listener.why || "not reachable"})`);
      option.disabled = !listener.sendable;
      option.dataset.kind = listener.kind || "tcp";
      if (listener.sendable) sendable += 1;
      choice.append(option);
    }
    if (previous && [...choice.options].some((o) => o.value === previous && !o.disabled)) {
      choice.value = previous;
    } else {
      const first = [...choice.options].find((o) => !o.disabled);
      if (first) choice.value = first.value;
    }
    if (!serverSetUp) {
      serverSetUp = true;
      $("send-framing").value = server.framing || "raw";
      $("send-mode").value = server.keepOpen ? "keep-open" : "one-shot";
    }
    sendableCount = sendable;
    updateFraming();
    updateSendButton();
  }

  // A WebSocket listener takes each message whole: no framing to choose.
  function updateFraming() {
    const chosen = $("send-listener").selectedOptions[0];
    const webSocket = Boolean(chosen && chosen.dataset.kind === "websocket");
    $("send-framing").disabled = webSocket;
    $("send-framing").title = webSocket ? "A WebSocket message is one message: no framing." : "";
  }

  function updateSendButton() {
    $("send-button").disabled = sending || sendableCount === 0;
    if (model.server && sendableCount === 0) {
      $("send-note").textContent = "None of this server's listeners can be reached by the send panel.";
    }
  }

  function showSendOutcome(result, error, note) {
    $("send-result").textContent = result || "";
    $("send-error").textContent = error || "";
    $("send-note").textContent = note || "";
  }

  async function send() {
    if (sending || sendableCount === 0) return;
    const body = {
      message: $("send-message").value,
      framing: $("send-framing").value,
      mode: $("send-mode").value,
      listener: Number($("send-listener").value),
      session,
    };
    sending = true;
    updateSendButton();
    showSendOutcome("", "", "sending\u2026");
    try {
      const response = await fetch("/api/send", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(body),
      });
      let data = null;
      try {
        data = await response.json();
      } catch (error) {
        data = null;
      }
      if (!response.ok) {
        showSendOutcome("", (data && data.error) || `The server answered ${response.status}.`, "");
      } else if (data && data.ok) {
        const note = [data.reused ? "Sent on the same connection as before (keep-open)." : "", data.note || ""]
          .filter(Boolean).join(" ");
        showSendOutcome(data.printed || "", "", note);
      } else {
        showSendOutcome("", (data && data.error) || "The send failed.", "");
      }
      if (data && data.connection !== null && data.connection !== undefined) showPanelConnection(data.connection);
    } catch (error) {
      showSendOutcome("", "The page could not reach the server: is it still running?", "");
    } finally {
      sending = false;
      updateSendButton();
    }
  }

  // The faults panel: GET /faults shows the faults in force, PUT changes them.
  // A field the user has edited is left alone by the refresh until applied.
  const FAULT_KEYS = [
    "delay", "jitter", "dropRate", "resetRate", "truncateRate", "stallRate", "cutAfter", "throttle",
  ];
  // Milliseconds between two reads of the faults in force (a scenario or
  // another client may change them).
  const FAULTS_REFRESH = 2000;
  let faultsInForce = null;

  function showFaults(faults) {
    const changed = JSON.stringify(faults) !== JSON.stringify(faultsInForce);
    faultsInForce = faults;
    for (const key of FAULT_KEYS) {
      const input = $(`fault-${key}`);
      if (!input.classList.contains("edited")) input.value = String(faults[key]);
    }
    return changed;
  }

  async function faultsRequest(method, body) {
    const response = await fetch("/faults", {
      method,
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try {
      data = await response.json();
    } catch (error) {
      data = null;
    }
    return { response, data };
  }

  async function refreshFaults() {
    try {
      const { response, data } = await faultsRequest("GET");
      if (!response.ok || !data) return;
      $("faults-panel").hidden = false;
      const first = faultsInForce === null;
      if (showFaults(data) && !first) {
        $("faults-status").textContent = `Changed on the server at ${new Date().toLocaleTimeString()}.`;
      }
    } catch (error) {
      // The stream's status already says when the server is gone.
    }
  }

  async function applyFaults(changes) {
    $("faults-error").textContent = "";
    try {
      const { response, data } = await faultsRequest("PUT", changes);
      if (!response.ok) {
        $("faults-error").textContent = (data && data.error) || `The server answered ${response.status}.`;
        return;
      }
      for (const key of FAULT_KEYS) $(`fault-${key}`).classList.remove("edited");
      showFaults(data);
      $("faults-status").textContent = `Applied at ${new Date().toLocaleTimeString()}.`;
    } catch (error) {
      $("faults-error").textContent = "The page could not reach the server: is it still running?";
    }
  }

  function editedFaults() {
    const changes = {};
    for (const key of FAULT_KEYS) {
      const input = $(`fault-${key}`);
      if (!input.classList.contains("edited")) continue;
      // Sent as typed: the server says what is wrong with a value.
      changes[key] = input.value.trim() === "" ? input.value : Number(input.value);
    }
    return changes;
  }

  function setupFaults() {
    for (const key of FAULT_KEYS) {
      $(`fault-${key}`).addEventListener("input", (event) => event.target.classList.add("edited"));
    }
    $("faults-apply").addEventListener("click", () => applyFaults(editedFaults()));
    $("faults-clear").addEventListener("click", () => {
      const none = {};
      for (const key of FAULT_KEYS) none[key] = 0;
      for (const key of FAULT_KEYS) $(`fault-${key}`).classList.remove("edited");
      applyFaults(none);
    });
    refreshFaults();
    setInterval(refreshFaults, FAULTS_REFRESH);
  }

  // The send panel's own connection is the one to look at.
  function showPanelConnection(id) {
    model.lastSwitch = performance.now();
    if (model.pendingFollow !== null && model.pendingFollow <= id) model.pendingFollow = null;
    if (model.selected === id) {
      fetchConnection(id);
    } else if (model.connections.has(id)) {
      select(id);
    } else {
      // Not in the list yet: the next update brings it.
      model.selected = id;
      for (const tr of rows.values()) tr.classList.remove("selected");
      dirty.timeline = true;
      scrollTop = true;
      fetchConnection(id);
      schedule();
    }
  }

  // ---- rendering -----------------------------------------------------------

  const rows = new Map(); // id -> tr
  const CELLS = ["peer", "listener", "framing", "state", "messages", "bytes-in", "bytes-out", "age", "outcome"];

  function makeRow(id) {
    const tr = document.createElement("tr");
    tr.dataset.id = String(id);
    const number = document.createElement("td");
    number.className = "id";
    number.textContent = String(id);
    tr.append(number);
    for (const name of CELLS) {
      const td = document.createElement("td");
      td.className = name;
      tr.append(td);
    }
    tr.addEventListener("click", () => {
      // Choosing a connection by hand stops following the newest one.
      $("follow-newest").checked = false;
      model.pendingFollow = null;
      select(id);
    });
    rows.set(id, tr);
    return tr;
  }

  function setCell(tr, name, text) {
    const td = tr.cells[CELLS.indexOf(name) + 1];
    if (td.textContent !== text) td.textContent = text;
    return td;
  }

  function ageOf(summary) {
    const end = summary.closedAt != null ? summary.closedAt : serverNow();
    return formatAge(end - summary.openedAt);
  }

  function fillRow(tr, summary) {
    setCell(tr, "peer", summary.peer || "");
    setCell(tr, "listener", summary.listener || "");
    setCell(tr, "framing", summary.framing || "");
    setCell(tr, "state", summary.state || "");
    setCell(tr, "messages", formatCount(summary.messages));
    setCell(tr, "bytes-in", formatCount(summary.bytesIn));
    setCell(tr, "bytes-out", formatCount(summary.bytesOut));
    setCell(tr, "age", ageOf(summary));
    const outcome = setCell(tr, "outcome", summary.outcome || "");
    outcome.title = summary.reason || "";
    outcome.classList.toggle("bad", Boolean(summary.outcome) && summary.outcome !== "ok");
    tr.classList.toggle("closed", summary.closedAt != null || summary.state === "closed");
    tr.classList.toggle("panel", Boolean(summary.panel));
    tr.classList.toggle("selected", summary.id === model.selected);
  }

  function renderConnections() {
    const tbody = document.querySelector("#connections tbody");
    for (const id of dirty.connections) {
      const summary = model.connections.get(id);
      if (summary) fillRow(rows.get(id) || makeRow(id), summary);
    }
    dirty.connections.clear();
    if (dirty.ages) {
      for (const [id, tr] of rows) {
        const summary = model.connections.get(id);
        if (summary && summary.closedAt == null) setCell(tr, "age", ageOf(summary));
      }
      dirty.ages = false;
    }
    if (dirty.order) {
      dirty.order = false;
      for (const [id, tr] of rows) {
        if (!model.connections.has(id)) {
          tr.remove();
          rows.delete(id);
        }
      }
      // Newest first.
      const ids = [...model.connections.keys()].sort((a, b) => b - a);
      const fragment = document.createDocumentFragment();
      for (const id of ids) fragment.append(rows.get(id) || makeRow(id));
      tbody.replaceChildren(fragment);
      for (const id of ids) {
        const summary = model.connections.get(id);
        if (!rows.get(id).cells[1].textContent) fillRow(rows.get(id), summary);
      }
      $("connections-empty").hidden = ids.length > 0;
    }
  }

  function span(className, text) {
    const element = document.createElement("span");
    element.className = className;
    element.textContent = text;
    return element;
  }

  // Which chunks each message came from: the chunks since the last one that
  // left nothing held. Returns a Map from message seq to chunk numbers.
  function chunkSources(list) {
    const sources = new Map();
    const numbers = new Map();
    let open = [];
    let held = false;
    let count = 0;
    for (const event of list) {
      if (event.side !== "server") continue;
      if (event.kind === "chunk") {
        count += 1;
        numbers.set(event.seq, count);
        if (!held) open = [];
        open.push(count);
        held = false;
      } else if (event.kind === "partial") {
        held = true;
      } else if (event.kind === "message") {
        sources.set(event.seq, open.slice());
        // Later messages of this chunk come from this chunk alone.
        open = open.slice(-1);
      }
    }
    return { sources, numbers };
  }

  function renderTimeline() {
    const ol = $("timeline");
    const id = model.selected;
    const summary = id === null ? null : model.connections.get(id);
    const held = id === null ? null : model.events.get(id);
    const title = $("timeline-title");
    if (id === null) {
      title.textContent = "Timeline";
      $("timeline-earlier").textContent = "";
      ol.replaceChildren();
      return;
    }
    title.textContent = summary
      ? `Timeline of connection #${id}: ${summary.peer} \u2192 ${summary.listener} (${summary.framing}, ${summary.state})`
      : `Timeline of connection #${id}`;
    const earlier = held ? held.earlier : 0;
    $("timeline-earlier").textContent = summary && summary.sampled
      ? "Made under load, past the 2,000 events a second the server keeps: it is listed with its counters and outcome, its events were not kept."
      : earlier > 0 ? `${plural(earlier, "earlier event", "earlier events")} not kept` : "";
    const list = held ? held.list : [];
    const { sources, numbers } = chunkSources(list);
    const fragment = document.createDocumentFragment();
    for (const event of list) {
      const li = document.createElement("li");
      li.className = "event";
      li.dataset.kind = event.kind;
      li.dataset.side = event.side;
      li.dataset.seq = String(event.seq);
      li.append(span("time", formatTime(event.t || 0)));
      const head = document.createElement("div");
      head.className = "head";
      head.append(span("label", labelOf(event)));
      if (event.side === "server" && event.kind === "chunk" && numbers.has(event.seq)) {
        head.append(span("from", `chunk #${numbers.get(event.seq)}`));
      }
      const from = sources.get(event.seq);
      if (from && from.length) {
        head.append(span("from", from.length === 1 ? `from chunk #${from[0]}` : `from chunks #${from.join(" + #")}`));
      }
      if (detailShown(event)) head.append(span("detail", event.detail));
      li.append(head);
      const text = span("text", event.text == null ? "" : event.text);
      if (event.more) text.append(span("more", " \u2026 (preview cut)"));
      li.append(text);
      li.append(span("hex", event.hex == null ? "" : event.hex));
      fragment.append(li);
    }
    // A new selection starts at its top; a timeline scrolled to its end
    // stays there as events arrive.
    const atEnd = ol.scrollTop > 0 && ol.scrollTop + ol.clientHeight >= ol.scrollHeight - 4;
    ol.replaceChildren(fragment);
    if (scrollTop) {
      ol.scrollTop = 0;
      scrollTop = false;
    } else if (atEnd) {
      ol.scrollTop = ol.scrollHeight;
    }
  }

  function renderStatus() {
    const status = $("stream-status");
    let text = model.streamState;
    let kind = model.streamState;
    if (model.streamState === "live" && performance.now() < model.sampledUntil) {
      text = `sampled: ${formatCount(model.skippedRecent)} events not shown`;
      kind = "sampled";
    }
    if (status.textContent !== text) status.textContent = text;
    status.className = `status ${kind}`;
  }

  function setText(id, text) {
    const element = $(id);
    if (element.textContent !== text) element.textContent = text;
  }

  function renderStats() {
    const stats = model.stats;
    if (!stats) return;
    setText("count-open", formatCount(stats.open));
    setText("count-total", formatCount(stats.total));
    setText("count-messages", formatCount(stats.messages));
    const rate = Array.isArray(stats.rate) && stats.rate.length ? stats.rate[stats.rate.length - 1] : 0;
    setText("count-rate", formatCount(rate));
    drawRate($("chart-rate"), Array.isArray(stats.rate) ? stats.rate : []);
    const sizes = stats.sizes || { labels: [], counts: [] };
    drawSizes($("chart-sizes"), sizes.labels || [], sizes.counts || []);
  }

  // ---- charts ----------------------------------------------------------------

  const CHART_FONT = "11px system-ui, sans-serif";

  function prepare(canvas) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || canvas.width;
    const height = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const context = canvas.getContext("2d");
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    context.clearRect(0, 0, width, height);
    context.font = CHART_FONT;
    return { context, width, height };
  }

  function niceMax(value) {
    if (value <= 5) return 5;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 5, 10]) {
      if (value <= step * power) return step * power;
    }
    return 10 * power;
  }

  function drawRate(canvas, rate) {
    const { context, width, height } = prepare(canvas);
    const left = 34;
    const bottom = height - 16;
    const top = 6;
    const values = rate.slice(-60);
    const max = niceMax(Math.max(0, ...values));
    context.strokeStyle = "#dde2e8";
    context.fillStyle = "#5f6b7a";
    context.textAlign = "right";
    context.textBaseline = "middle";
    for (const fraction of [0, 0.5, 1]) {
      const y = bottom - fraction * (bottom - top);
      context.beginPath();
      context.moveTo(left, y);
      context.lineTo(width - 4, y);
      context.stroke();
      context.fillText(formatCount(Math.round(max * fraction)), left - 4, y);
    }
    context.textAlign = "left";
    context.textBaseline = "alphabetic";
    context.fillText("-60 s", left, height - 3);
    context.textAlign = "right";
    context.fillText("now", width - 4, height - 3);
    const slot = (width - 4 - left) / 60;
    context.fillStyle = "#2b6cb0";
    values.forEach((value, index) => {
      const x = left + (60 - values.length + index) * slot;
      const h = (Math.max(0, value) / max) * (bottom - top);
      context.fillRect(x + 0.5, bottom - h, Math.max(1, slot - 1), h);
    });
  }

  function drawSizes(canvas, labels, counts) {
    const { context, width, height } = prepare(canvas);
    const left = 6;
    const bottom = height - 16;
    const top = 14;
    const n = Math.max(1, counts.length);
    const max = Math.max(1, ...counts);
    const slot = (width - 2 * left) / n;
    context.strokeStyle = "#dde2e8";
    context.beginPath();
    context.moveTo(left, bottom + 0.5);
    context.lineTo(width - left, bottom + 0.5);
    context.stroke();
    context.textAlign = "center";
    const widest = Math.max(0, ...labels.map((label) => context.measureText(String(label)).width));
    const every = Math.max(1, Math.ceil((widest + 6) / slot));
    counts.forEach((count, index) => {
      const x = left + index * slot;
      const h = (count / max) * (bottom - top);
      context.fillStyle = "#2f855a";
      context.fillRect(x + 1, bottom - h, Math.max(1, slot - 2), h);
      if (count > 0) {
        context.fillStyle = "#1d232b";
        context.fillText(formatCount(count), x + slot / 2, bottom - h - 3);
      }
      if (index % every === 0 && labels[index] !== undefined) {
        context.fillStyle = "#5f6b7a";
        context.fillText(String(labels[index]), x + slot / 2, height - 3);
      }
    });
  }

  // ---- the frame ---------------------------------------------------------------

  function render() {
    frameRequested = false;
    followIfDue();
    if (dirty.connections.size || dirty.order || dirty.ages) renderConnections();
    if (dirty.timeline) {
      dirty.timeline = false;
      renderTimeline();
    }
    if (dirty.stats) {
      dirty.stats = false;
      renderStats();
    }
    renderStatus();
    dirty.status = false;
  }

  function start() {
    $("send-button").addEventListener("click", send);
    $("send-listener").addEventListener("change", updateFraming);
    $("send-message").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.isComposing) {
        event.preventDefault();
        send();
      }
    });
    $("follow-newest").addEventListener("change", () => {
      if ($("follow-newest").checked) {
        const ids = [...model.connections.keys()];
        if (ids.length) {
          model.pendingFollow = Math.max(...ids);
          model.lastSwitch = 0;
          schedule();
        }
      }
    });
    updateSendButton();
    // Ages move, a pending follow comes due, and "sampled" wears off.
    setInterval(() => {
      dirty.ages = true;
      schedule();
    }, 1000);
    renderStatus();
    openStream();
    setupFaults();
  }

  start();
})();
