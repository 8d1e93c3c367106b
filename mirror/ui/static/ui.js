// registry-mirror UI: progressive enhancement only; every page works without it.
// Text from the server is placed with textContent, never parsed as HTML.
"use strict";

(function () {
  const POLL_MS = 2000;
  const POLL_MAX_MS = 30000;

  function announce(text) {
    const region = document.getElementById("announcer");
    if (region) {
      region.textContent = "";
      window.setTimeout(() => { region.textContent = text; }, 50);
    }
  }

  // Copy buttons: the clipboard API where the page is a secure context
  // (HTTPS, localhost), else a selection and execCommand (plain-HTTP mirrors).
  function copyText(source) {
    const text = source.textContent;
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    const copied = document.execCommand("copy");
    return copied ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function setUpCopyButtons() {
    for (const button of document.querySelectorAll("button[data-copy]")) {
      const source = document.getElementById(button.dataset.copy);
      if (!source) {
        continue;
      }
      button.hidden = false;
      button.addEventListener("click", () => {
        copyText(source).then(
          () => { button.dataset.copied = "true"; announce("Copied to the clipboard."); },
          () => { announce("Copying failed: select the text and copy it."); },
        );
      });
    }
  }

  // "/" moves to the search box, unless the user is typing somewhere.
  function setUpSearchKey() {
    document.addEventListener("keydown", (event) => {
      const target = event.target;
      const typing = target instanceof HTMLElement &&
        (target.isContentEditable || ["INPUT", "SELECT", "TEXTAREA"].includes(target.tagName));
      if (event.key !== "/" || typing || event.ctrlKey || event.metaKey || event.altKey) {
        return;
      }
      const box = document.querySelector("[data-search]");
      if (box) {
        event.preventDefault();
        box.focus();
      }
    });
  }

  function fillRow(fill) {
    const row = document.createElement("tr");
    row.dataset.fill = fill.id;
    const blob = document.createElement("th");
    blob.scope = "row";
    const code = document.createElement("code");
    code.title = fill.digest;
    code.textContent = fill.short_digest;
    blob.append(code);
    const repository = document.createElement("td");
    repository.textContent = fill.upstream + "/" + fill.repository;
    const received = document.createElement("td");
    const bar = document.createElement("progress");
    if (fill.total) {
      bar.max = fill.total;
      bar.value = fill.received;
    }
    bar.setAttribute("aria-label", "Received of " + fill.short_digest);
    const text = document.createElement("span");
    text.className = "progress-text";
    text.textContent = " " + fill.progress;
    received.append(bar, text);
    const followers = document.createElement("td");
    followers.className = "num";
    followers.textContent = String(fill.followers);
    row.append(blob, repository, received, followers);
    return row;
  }

  function showFills(table, fills) {
    const body = table.querySelector("tbody");
    body.replaceChildren(...fills.map(fillRow));
    const summary = document.getElementById("fills-summary");
    const words = fills.length + (fills.length === 1 ? " download" : " downloads") + " in progress.";
    if (summary && summary.textContent !== words) {
      summary.textContent = words;
    }
  }

  // Refresh the downloads table while the page is visible; back off when the
  // mirror does not answer, so a stopped mirror is not polled every 2 s.
  function followFills() {
    const table = document.querySelector("table[data-fills-url]");
    if (!table) {
      return;
    }
    let delay = POLL_MS;
    const poll = () => {
      if (document.hidden) {
        window.setTimeout(poll, POLL_MS);
        return;
      }
      fetch(table.dataset.fillsUrl, { cache: "no-store", credentials: "same-origin" })
        .then((response) => {
          if (!response.ok) {
            throw new Error("status " + response.status);
          }
          return response.json();
        })
        .then((data) => { showFills(table, data.fills); delay = POLL_MS; })
        .catch(() => { delay = Math.min(delay * 2, POLL_MAX_MS); })
        .finally(() => { window.setTimeout(poll, delay); });
    };
    window.setTimeout(poll, POLL_MS);
  }

  setUpCopyButtons();
  setUpSearchKey();
  followFills();
})();
