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

  function runPage(container, onEnd) {
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
    follow('/v1/workflows/' + encodeURIComponent(id) + '/events', container.dataset.kinds || '', schedule, function () {
      schedule();
      if (onEnd) onEnd();
    });
  }


  var SVG_NS = 'http://www.w3.org/2000/svg';
  /** The charts' drawing box (their viewBox): the SVG scales it to the page. */
  var CHART_W = 600, CHART_H = 160, CHART_PAD = 14;

  function svgEl(name, attrs) {
    var el = document.createElementNS(SVG_NS, name);
    Object.keys(attrs).forEach(function (key) { el.setAttribute(key, attrs[key]); });
    return el;
  }

  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); }

  // Lines of `series` ({cls, values}) over the last `seconds` points, scaled to their maximum,
  // which `scale` (an HTML element: SVG text would stretch with the chart) shows.
  function drawLines(svg, scale, series, seconds, unit) {
    clear(svg);
    var max = 1;
    series.forEach(function (s) { s.values.forEach(function (v) { if (v > max) max = v; }); });
    var step = (CHART_W - 2 * CHART_PAD) / Math.max(seconds - 1, 1);
    series.forEach(function (s) {
      var offset = seconds - s.values.length;
      var points = s.values.map(function (v, i) {
        var x = CHART_PAD + (offset + i) * step;
        var y = CHART_H - CHART_PAD - (v / max) * (CHART_H - 2 * CHART_PAD);
        return x.toFixed(1) + ',' + y.toFixed(1);
      });
      if (points.length) svg.appendChild(svgEl('polyline', { 'class': s.cls, points: points.join(' ') }));
    });
    if (scale) scale.textContent = 'top of the chart: ' + max + unit;
  }

  // One bar per queue of `backlog` ({queue: tasks}), in the table's order (the table names them).
  function drawBars(svg, backlog) {
    clear(svg);
    var names = Object.keys(backlog);
    var max = 1;
    names.forEach(function (n) { if (backlog[n] > max) max = backlog[n]; });
    var width = (CHART_W - 2 * CHART_PAD) / Math.max(names.length, 1);
    names.forEach(function (n, i) {
      // A drained queue keeps a sliver of a bar: it is there, with nothing waiting.
      var h = Math.max((backlog[n] / max) * (CHART_H - 2 * CHART_PAD), 1);
      var x = CHART_PAD + i * width;
      svg.appendChild(svgEl('rect', { 'class': 'bar', x: x + 4, y: CHART_H - CHART_PAD - h, width: Math.max(width - 8, 1), height: h }));
    });
  }

  function setText(id, text) {
    var el = document.getElementById(id);
    if (el) el.textContent = text;
  }

  // The overview follows the engine's one-a-second ticks (`event: tick`) and redraws.
  function overviewPage(section) {
    var seconds = parseInt(section.dataset.seconds, 10) || 120;
    var history = [];
    var source = new EventSource('/v1/overview/events');
    source.onopen = function () { setLive('● live', 'on'); };
    source.onerror = function () {
      setLive(source.readyState === EventSource.CLOSED ? '○ not live: reload' : '○ reconnecting…', 'off');
    };
    source.addEventListener('tick', function (message) {
      var tick;
      try { tick = JSON.parse(message.data); } catch (e) { return; }
      history.push(tick);
      if (history.length > seconds) history.shift();
      setText('started', tick.started);
      setText('finished', tick.finished);
      setText('started-rate', tick.startedPerSec);
      setText('finished-rate', tick.finishedPerSec);
      setText('p50', tick.latencyP50Ms + ' ms');
      setText('p90', tick.latencyP90Ms + ' ms');
      setText('p99', tick.latencyP99Ms + ' ms');
      setText('samples', tick.latencySamples);
      var pick = function (key) { return history.map(function (t) { return t[key]; }); };
      drawLines(document.getElementById('rate-chart'), document.getElementById('rate-scale'), [
        { cls: 'started', values: pick('startedPerSec') },
        { cls: 'finished', values: pick('finishedPerSec') }
      ], seconds, '/s');
      drawLines(document.getElementById('latency-chart'), document.getElementById('latency-scale'), [
        { cls: 'p50', values: pick('latencyP50Ms') },
        { cls: 'p90', values: pick('latencyP90Ms') },
        { cls: 'p99', values: pick('latencyP99Ms') }
      ], seconds, ' ms');
      drawBars(document.getElementById('backlog-chart'), tick.backlog);
      var body = document.querySelector('#backlog tbody');
      if (body) {
        clear(body);
        Object.keys(tick.backlog).forEach(function (queue) {
          var row = document.createElement('tr');
          row.dataset.queue = queue;
          [queue, String(tick.backlog[queue])].forEach(function (text) {
            var cell = document.createElement('td');
            cell.textContent = text;
            row.appendChild(cell);
          });
          body.appendChild(row);
        });
      }
    });
  }

  // The queues page fetches its table once per tick of the overview stream.
  function queuesPage(container) {
    var busy = false;
    var source = new EventSource('/v1/overview/events');
    source.onopen = function () { setLive('● live', 'on'); };
    source.onerror = function () {
      setLive(source.readyState === EventSource.CLOSED ? '○ not live: reload' : '○ reconnecting…', 'off');
    };
    source.addEventListener('tick', function () {
      if (busy) return;
      busy = true;
      fetch('/console/queues/live', { credentials: 'same-origin' })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) { if (html !== null) container.innerHTML = html; })
        .catch(function () { setLive('○ the queues could not be fetched', 'off'); })
        .then(function () { busy = false; });
    });
  }

  // The shop beside a run: fetched when the page shows and when the run ends.
  function shopPanel(section) {
    var panel = document.getElementById('shop-panel');
    fetch('/console/runs/' + encodeURIComponent(section.dataset.id) + '/shop', { credentials: 'same-origin' })
      .then(function (response) { return response.text().then(function (html) { return [response.ok, html]; }); })
      .then(function (answer) {
        if (answer[0]) { panel.innerHTML = answer[1]; } else { panel.textContent = 'The shop cannot be shown now.'; }
      })
      .catch(function () { panel.textContent = 'The shop cannot be shown now: the engine did not answer.'; });
  }

  document.addEventListener('DOMContentLoaded', function () {
    var runs = document.getElementById('runs');
    if (runs) runsPage(runs);
    var run = document.getElementById('run-live');
    var shop = document.getElementById('shop');
    if (run) runPage(run, shop ? function () { shopPanel(shop); } : null);
    if (shop) shopPanel(shop);
    var overview = document.getElementById('overview');
    if (overview) overviewPage(overview);
    var queues = document.getElementById('queues-live');
    if (queues) queuesPage(queues);
  });
})();
