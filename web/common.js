// What every page shares: the API key kept in this tab only, API calls
// that turn error answers into sentences, formatting, and an element
// builder that only ever sets text (user-supplied text is never HTML).
"use strict";

const vidpipe = (() => {
  const KEY = "vidpipe.key";

  /** An error answer of the API, or of a tus request. */
  class ApiError extends Error {
    constructor(status, message, retryAfter) {
      super(message);
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  const key = () => sessionStorage.getItem(KEY);
  const setKey = (value) => (value ? sessionStorage.setItem(KEY, value) : sessionStorage.removeItem(KEY));
  const authorization = () => (key() ? { Authorization: "Bearer " + key() } : {});

  async function api(path, options = {}) {
    const headers = { ...authorization(), ...(options.headers || {}) };
    let response;
    try {
      response = await fetch(path, { ...options, headers });
    } catch (e) {
      throw new ApiError(0, "the server cannot be reached: " + e.message);
    }
    if (!response.ok) {
      let message = response.statusText;
      try {
        message = (await response.json()).message || message;
      } catch { /* not JSON */ }
      throw new ApiError(response.status, message, response.headers.get("Retry-After"));
    }
    return response.status === 204 ? null : response.json();
  }

  /** A sentence a person can act on, for an error answer. */
  function explain(error) {
    const { status, message, retryAfter } = error;
    const wait = retryAfter ? ` Try again in ${retryAfter} s.` : " Try again shortly.";
    switch (status) {
      case 401: return "Refused: " + message;
      case 403: return "This key may not do that: " + message;
      case 409: return "Conflict: " + message;
      case 410: return "Expired: " + message;
      case 413: return "The file is too large: " + message;
      case 415: return "This file is not a video vidpipe takes: " + message;
      case 422: return "This video cannot be used: " + message;
      case 429: return "Too many uploads from here." + wait;
      case 503: return "The server is busy." + wait;
      case 507: return "The server is low on disk space; try again later.";
      default: return message || "Something went wrong.";
    }
  }

  function bytes(n) {
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  function seconds(s) {
    if (!isFinite(s)) return "…";
    s = Math.round(s);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  function age(rfc3339) {
    return seconds((Date.now() - Date.parse(rfc3339)) / 1000);
  }

  /** `el("td", {class: "x"}, "text", child)`: children are text or nodes. */
  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value === false || value == null) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child == null) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  return { ApiError, key, setKey, authorization, api, explain, bytes, seconds, age, el };
})();
