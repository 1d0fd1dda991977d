// The console's one script: live pages over the API's SSE streams. The session cookie goes
// with every same-origin request, EventSource's included, so no credential is handled here.
// The script never polls: it fetches a fragment only when a stream says something changed,
// at most once per DEBOUNCE_MS per page (or per run on the runs page).
(function () {
  'use strict';
  /** Changes gathered before the page fetches what they touched. */
  var DEBOUNCE_MS = 150;
  /** Runs the runs page keeps track of between two fetches; more are dropped until then. */
  var MAX_PENDING_RUNS = 200;

  function setLive(text, state) {
    var el = document.getElementById('live-state');
    if (el) {
      el.textContent = text;
      el.className = 'live ' + state;
    }
  }

  // Each SSE message is named after its event's kind (`event: StepCompleted`), and
  // EventSource has no wildcard: the page lists the kinds (data-kinds, from the engine).
  function follow(url, kinds, onChange, onEnd) {
    var source = new EventSource(url);
    source.onopen = function () { setLive('● live', 'on'); };
    source.onerror = function () {
      setLive(source.readyState === EventSource.CLOSED ? '○ not live: reload' : '○ reconnecting…', 'off');
    };
    source.onmessage = onChange;
    kinds.split(',').forEach(function (kind) {
      if (kind) source.addEventListener(kind, onChange);
    });
    source.addEventListener('end', function () {
      source.close();
      setLive('finished', 'done');
      if (onEnd) onEnd();
    });
    return source;
  }

  function runsPage(table) {
    var filters = new URLSearchParams();
    ['status', 'type', 'q'].forEach(function (key) {
      if (table.dataset[key]) filters.set(key, table.dataset[key]);
    });
    var pending = new Set();
    var timer = null;

    function refreshRow(id) {
      var url = '/console/runs/' + encodeURIComponent(id) + '/row?' + filters.toString();
      return fetch(url, { credentials: 'same-origin' }).then(function (response) {
        var current = table.querySelector('tr[data-id="' + CSS.escape(id) + '"]');
        if (response.status === 204) {
          if (current) current.remove();
          return null;
        }
        if (!response.ok) return null;
        return response.text().then(function (html) {
          var holder = document.createElement('tbody');
          holder.innerHTML = html.trim();
          var row = holder.firstElementChild;
          if (!row) return;
          if (current) {
            current.replaceWith(row);
          } else {
            row.classList.add('new');
            document.getElementById('run-rows').prepend(row);
            var empty = document.getElementById('no-runs');
            if (empty) empty.remove();
          }
        });
      }).catch(function () { setLive('○ a row could not be fetched', 'off'); });
    }

    function flush() {
      timer = null;
      var ids = Array.from(pending);
      pending.clear();
      ids.forEach(refreshRow);
    }

    var stream = new URLSearchParams();
    if (table.dataset.type) stream.set('type', table.dataset.type);
    follow('/v1/events?' + stream.toString(), table.dataset.kinds || '', function (message) {
      var data;
      try { data = JSON.parse(message.data); } catch (e) { return; }
      var id = data && data.workflowId;
      if (!id) return;
      if (table.dataset.q && id.indexOf(table.dataset.q) !== 0) return;
      if (pending.size < MAX_PENDING_RUNS) pending.add(id);
      if (!timer) timer = setTimeout(flush, DEBOUNCE_MS);
    });
  }

  function runPage(container) {
    var id = container.dataset.id;
    var timer = null;
    function refresh() {
      timer = null;
      fetch('/console/runs/' + encodeURIComponent(id) + '/live', { credentials: 'same-origin' })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) { if (html !== null) container.innerHTML = html; })
        .catch(function () { setLive('○ the run could not be fetched', 'off'); });
    }
    function schedule() { if (!timer) timer = setTimeout(refresh, DEBOUNCE_MS); }
    follow('/v1/workflows/' + encodeURIComponent(id) + '/events', container.dataset.kinds || '', schedule, schedule);
  }

  document.addEventListener('DOMContentLoaded', function () {
    var runs = document.getElementById('runs');
    if (runs) runsPage(runs);
    var run = document.getElementById('run-live');
    if (run) runPage(run);
  });
})();
