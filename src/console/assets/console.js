// tailfleet console: the live status of what a page shows, and its charts. Loaded as a file (the
// Content-Security-Policy allows no inline script); everything else the pages do is plain HTML forms.
/* global document, window, fetch, URL, URLSearchParams, FormData, EventSource */
(function () {
  'use strict';

  function setStatus(el, status) {
    el.textContent = status;
    var tone = el.className.match(/status-\w+/);
    if (tone) el.classList.remove(tone[0]);
    el.classList.add('status-' + toneOf(status));
  }

  var TONES = {
    active: 'ok', running: 'ok', succeeded: 'ok', resolved: 'ok',
    paused: 'idle', stopped: 'idle', hibernated: 'idle', cancelled: 'idle', destroyed: 'idle',
    error: 'bad', failed: 'bad', open: 'bad',
  };
  function toneOf(status) {
    return TONES[status] || 'busy';
  }

  function announce(text) {
    var note = document.getElementById('live-note');
    if (note) note.textContent = text;
  }

  // The agent page's timeline gains each event of its agent as it is written.
  function addToTimeline(e) {
    var body = document.getElementById('timeline');
    if (!body || body.dataset.agent !== e.agentId) return;
    var subject = e.entityType === 'agent' ? 'agent' : String(e.entityType).replace('_', ' ') + ' ' + String(e.entityId).slice(0, 8);
    var actor = /^token:(.+)#[0-9a-f-]{36}$/.exec(e.actor || '');
    var cells = [String(e.at).replace('T', ' ').replace(/\.\d+Z$/, 'Z'), subject, (e.fromStatus || '·') + ' → ' + e.toStatus, actor ? 'token ' + actor[1] : e.actor, e.reason, ''];
    var row = document.createElement('tr');
    row.className = 'event';
    for (var i = 0; i < cells.length; i++) {
      var td = document.createElement('td');
      td.textContent = cells[i];
      row.appendChild(td);
    }
    body.insertBefore(row, body.firstChild);
  }

  function live() {
    if (!document.body.dataset.live || typeof EventSource === 'undefined') return;
    var source = new EventSource('/console/events');
    source.onmessage = function (message) {
      var e;
      try {
        e = JSON.parse(message.data);
      } catch {
        return;
      }
      if (!e || !e.toStatus) return;
      var selector = null;
      // An expiry warning or an extend is an agent event that leaves its status as it was: timeline only.
      var notice = e.entityType === 'agent' && (e.toStatus === 'expiring' || e.toStatus === 'extended');
      if (notice) {
        addToTimeline(e);
        return;
      }
      if (e.entityType === 'agent') selector = '[data-agent-status="' + e.entityId + '"]';
      else if (e.entityType === 'instance' && e.agentId) selector = '[data-instance-of="' + e.agentId + '"]';
      else if (e.entityType === 'operation') selector = '[data-operation-status="' + e.entityId + '"]';
      if (!selector) return;
      var els = document.querySelectorAll(selector);
      for (var i = 0; i < els.length; i++) {
        if (e.entityType === 'instance') els[i].textContent = e.toStatus;
        else setStatus(els[i], e.toStatus);
      }
      addToTimeline(e);
      if (els.length && e.entityType === 'agent') announce('Agent ' + e.entityId.slice(0, 8) + ' is now ' + e.toStatus + '.');
    };
    // The server ends the stream on shutdown or for a slow reader; EventSource reconnects by itself
    // with Last-Event-ID, and the console passes it on.
    source.onopen = function () {
      document.documentElement.dataset.stream = 'open';
    };
    source.onerror = function () {
      document.documentElement.dataset.stream = 'reconnecting';
    };
  }

  // Forms marked data-async post without leaving the page (so its live status keeps going); the
  // console answers them as any form, with a redirect whose notice or error is shown here.
  function asyncForms() {
    var forms = document.querySelectorAll('form[data-async]');
    for (var i = 0; i < forms.length; i++) {
      forms[i].addEventListener('submit', function (ev) {
        var form = ev.currentTarget;
        ev.preventDefault();
        var button = form.querySelector('button[type="submit"]');
        if (button) button.disabled = true;
        fetch(form.action, {
          method: 'POST',
          body: new URLSearchParams(new FormData(form)),
          credentials: 'same-origin',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
        })
          .then(function (res) {
            var params = new URL(res.url).searchParams;
            if (!res.ok && !params.get('error')) throw new Error('The server answered ' + res.status + '.');
            show(params.get('error') ? 'alert' : 'notice', params.get('error') || params.get('notice') || 'Done.');
          })
          .catch(function (err) {
            show('alert', err.message);
          })
          .then(function () {
            if (button) button.disabled = false;
          });
      });
    }
  }

  function show(kind, text) {
    var box = document.getElementById('form-result');
    if (!box) return;
    box.className = kind;
    box.setAttribute('role', kind === 'alert' ? 'alert' : 'status');
    box.textContent = text;
    box.hidden = false;
  }

  function charts() {
    var data = document.getElementById('chart-data');
    if (!data || typeof window.Chart === 'undefined') return;
    var d = JSON.parse(data.textContent || '{}');
    var hourly = document.getElementById('chart-hourly');
    if (hourly && d.hourly) {
      new window.Chart(hourly, {
        type: 'bar',
        data: {
          labels: d.hourly.map(function (b) { return b.hour; }),
          datasets: [
            { label: 'operations', data: d.hourly.map(function (b) { return b.operations - b.failures; }), backgroundColor: '#3f6fb5', stack: 'ops' },
            { label: 'failed', data: d.hourly.map(function (b) { return b.failures; }), backgroundColor: '#b3261e', stack: 'ops' },
          ],
        },
        options: { animation: false, responsive: true, maintainAspectRatio: false, scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } },
      });
    }
    var cost = document.getElementById('chart-cost');
    if (cost && d.cost) {
      new window.Chart(cost, {
        type: 'doughnut',
        data: {
          labels: d.cost.map(function (c) { return c[0]; }),
          datasets: [{ label: 'monthly ' + (d.currency || ''), data: d.cost.map(function (c) { return c[1]; }), backgroundColor: ['#2e7d4f', '#6b7a90', '#3f6fb5', '#c68a00', '#b3261e', '#8e5bb5', '#999'] }],
        },
        options: { animation: false, responsive: true, maintainAspectRatio: false },
      });
    }
  }

  document.addEventListener('DOMContentLoaded', function () {
    live();
    asyncForms();
    charts();
  });
})();
