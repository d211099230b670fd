// The mtc status page: polls api/status and renders it with DOM calls and textContent only
// (peer IDs, roles, services and errors come from peers: never parsed as HTML).

const REFRESH_MS = 2000

/** An element with optional class and children (strings become text nodes). */
function el(tag, className, ...children) {
  const e = document.createElement(tag)
  if (className) e.className = className
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)))
  return e
}

function badge(text, kind) {
  return el('span', `badge${kind ? ` ${kind}` : ''}`, text)
}

function shortId(id) {
  const c = el('code', '', id.length > 16 ? `${id.slice(0, 8)}…${id.slice(-6)}` : id)
  c.title = id
  return c
}

function rtt(ms) {
  if (ms == null) return '–'
  return ms < 1 ? `${(ms * 1000).toFixed(0)} µs` : `${ms.toFixed(2)} ms`
}

function ago(now, t) {
  const s = Math.max(0, Math.round((now - t) / 1000))
  return s < 60
    ? `${s}s ago`
    : s < 3600
      ? `${Math.floor(s / 60)}m ago`
      : `${Math.floor(s / 3600)}h ago`
}

function roleBadge(role) {
  const b = badge(role ?? 'unknown')
  b.classList.add('role')
  b.dataset.role = role ?? 'unknown'
  return b
}

function readyBadge(ready) {
  if (ready === true) return badge('ready', 'ok')
  if (ready === false) return badge('not ready', 'bad')
  return badge('unknown')
}

function cell(content, className) {
  return el('td', className, content ?? '–')
}

function renderSummary(doc) {
  const connected = doc.peers.filter((p) => p.connected).length
  const instances = doc.services.reduce((n, s) => n + s.instances.length, 0)
  const stat = (label, value) => el('div', 'stat', el('b', '', value), label)
  document
    .getElementById('summary')
    .replaceChildren(
      stat('peers connected', connected),
      stat('services', doc.services.length),
      stat('instances', instances),
      stat('allocators', doc.allocators.length),
      stat('recent errors', doc.errors.length),
    )
}

function renderServices(doc) {
  const box = document.getElementById('services')
  if (doc.services.length === 0) {
    box.replaceChildren(el('p', 'muted', 'No service instance connected.'))
    return
  }
  box.replaceChildren(
    ...doc.services.map((s) => {
      const byHost = new Map()
      for (const i of s.instances) {
        const h = i.host ?? 'unknown host'
        if (!byHost.has(h)) byHost.set(h, [])
        byHost.get(h).push(i)
      }
      const card = el('div', 'card service')
      card.dataset.service = s.name
      card.append(el('h3', '', s.name, ' ', badge(`${s.instances.length} instance(s)`)))
      for (const [host, list] of byHost) {
        card.append(el('div', 'muted', 'on ', el('code', '', host)))
        card.append(
          el(
            'ul',
            '',
            ...list.map((i) =>
              el('li', 'instance', shortId(i.peerId), ' ', readyBadge(i.ready), ' ', rtt(i.rttMs)),
            ),
          ),
        )
      }
      return card
    }),
  )
}

function renderAllocators(doc) {
  const box = document.getElementById('allocators')
  if (doc.allocators.length === 0) {
    box.replaceChildren(el('p', 'muted', 'No allocator connected.'))
    return
  }
  box.replaceChildren(
    ...doc.allocators.map((a) => {
      const card = el(
        'div',
        'card allocator',
        el('h3', '', 'on ', el('code', '', a.host ?? 'unknown host')),
        el('div', 'muted', shortId(a.peerId)),
        el('div', '', `${a.running} of ${a.maxInstances} instances running`),
        el('div', 'muted', `${a.starting} starting`),
      )
      card.dataset.peerId = a.peerId
      return card
    }),
  )
}

function renderPeers(doc) {
  const rows = doc.peers.map((p) => {
    const tr = el(
      'tr',
      'peer',
      cell(roleBadge(p.role)),
      cell(shortId(p.peerId)),
      cell(p.host ? el('code', '', p.host) : null),
      cell(p.service),
      cell(rtt(p.rttMs), 'num'),
      cell(rtt(p.smoothedRttMs), 'num'),
      cell(p.probesFailed, 'num'),
      cell(p.metrics ? el('code', '', p.metrics) : null),
      cell(
        p.connected ? badge('connected', 'ok') : badge(`gone ${ago(doc.now, p.lastSeen)}`, 'warn'),
      ),
    )
    tr.dataset.peerId = p.peerId
    return tr
  })
  if (rows.length === 0) rows.push(el('tr', '', el('td', 'muted', 'No peer yet.')))
  document.querySelector('#peers tbody').replaceChildren(...rows)
}

function renderErrors(doc) {
  const rows = doc.errors.map((e) =>
    el(
      'tr',
      '',
      cell(ago(doc.now, e.time)),
      cell(shortId(e.peerId)),
      cell(e.message, 'wrap'),
      cell(e.count, 'num'),
    ),
  )
  if (rows.length === 0) rows.push(el('tr', '', el('td', 'muted', 'None.')))
  document.querySelector('#errors tbody').replaceChildren(...rows)
}

async function refresh() {
  const updated = document.getElementById('updated')
  try {
    const res = await fetch('api/status', { cache: 'no-store' })
    if (!res.ok) throw new Error(`HTTP ${res.status}`)
    const doc = await res.json()
    document.getElementById('self').textContent =
      `${doc.self.role} ${doc.self.version} · ${doc.self.peerId}`
    renderSummary(doc)
    renderServices(doc)
    renderAllocators(doc)
    renderPeers(doc)
    renderErrors(doc)
    updated.className = 'badge ok'
    updated.textContent = `live · ${new Date(doc.now).toLocaleTimeString()}`
  } catch (err) {
    updated.className = 'badge bad'
    updated.textContent = `cannot reach the monitor: ${err.message}`
  } finally {
    setTimeout(refresh, REFRESH_MS)
  }
}

refresh()
