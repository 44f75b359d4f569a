// Countersign auditor console: search the audit trail, open a record and check its inclusion
// proof here in the browser, and chart decisions over time by outcome.
//
// No dependencies, no build step, no inline script (the page's CSP is script-src 'self').
// Everything the server sends is put into the page with textContent or SVG attributes, never
// parsed as HTML: record fields are data, not markup.
'use strict';

(() => {
  const OUTCOMES = ['allow', 'deny', 'pending', 'error'];
  // Same values as the CSS variables; the end-to-end test counts these pixels in the chart.
  const OUTCOME_COLOURS = {
    allow: '#1b9e4b',
    deny: '#d7301f',
    pending: '#f2a900',
    error: '#7b3294',
  };
  const SVG_NS = 'http://www.w3.org/2000/svg';
  // A gap-filled time axis longer than this is drawn with the buckets as they came.
  const CHART_BARS_MAX = 400;
  const BUCKET_SECONDS = { hour: 3600, day: 86400 };
  // The chart's range when the search names none: the last two days by hour, the last
  // sixty by day (the stats endpoint needs both ends).
  const DEFAULT_BUCKETS = { hour: 48, day: 60 };
  // Longer ranges are charted by day: a bar per hour would be thinner than a pixel.
  const HOUR_BUCKETS_MAX = 24 * 31;

  const state = {
    query: null, // URLSearchParams of the current search, without `after`
    nextAfter: null, // keyset cursor of the next page, null on the last page
    page: 0,
    selectedRecordId: null,
    publicKey: null, // Promise<{key: CryptoKey|null, keyId: string|null, reason: string|null}>
    chartRange: '', // the searched from|to the chart shows
  };

  const $ = (id) => document.getElementById(id);

  class ApiError extends Error {
    constructor(status, body) {
      const code = body && body.code ? body.code : `http.${status}`;
      const message = body && body.message ? body.message : 'request failed';
      super(`${status} ${code}: ${message}`);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path, accept = 'application/json') {
    const response = await fetch(path, {
      headers: { Accept: accept },
      credentials: 'same-origin',
      cache: 'no-store',
    });
    if (accept !== 'application/json') {
      if (!response.ok) throw new ApiError(response.status, null);
      return response.text();
    }
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) throw new ApiError(response.status, body);
    if (body === null) throw new Error(`${path}: the answer is not JSON`);
    return body;
  }

  function setStatus(element, text, isError = false) {
    element.textContent = text;
    element.classList.toggle('error', isError);
  }

  function el(tag, attributes = {}, text = null) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
    if (text !== null) element.textContent = text;
    return element;
  }

  function svg(tag, attributes = {}, text = null) {
    const element = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attributes)) {
      element.setAttribute(name, String(value));
    }
    if (text !== null) element.textContent = text;
    return element;
  }

  // ----------------------------------------------------------------------------------------
  // Time
  // ----------------------------------------------------------------------------------------

  // A datetime-local value, read as UTC (the whole console shows UTC), to RFC 3339.
  function localInputToRfc3339(value) {
    if (!value) return null;
    const withSeconds = value.length === 16 ? `${value}:00` : value;
    const date = new Date(`${withSeconds}Z`);
    if (Number.isNaN(date.getTime())) throw new Error(`not a date and time: ${value}`);
    return date.toISOString();
  }

  function formatUtc(rfc3339) {
    const date = new Date(rfc3339);
    if (Number.isNaN(date.getTime())) return String(rfc3339);
    return date.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  }

  // ----------------------------------------------------------------------------------------
  // Hex, bytes, hashing: RFC 6962 / RFC 9162 Merkle tree hashing with WebCrypto
  // ----------------------------------------------------------------------------------------

  function hexToBytes(hex) {
    if (typeof hex !== 'string' || hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
      throw new Error(`not a hex string: ${String(hex).slice(0, 80)}`);
    }
    const bytes = new Uint8Array(hex.length / 2);
    for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(hex.substr(i * 2, 2), 16);
    return bytes;
  }

  function bytesToHex(bytes) {
    return Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('');
  }

  function base64ToBytes(text) {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  async function sha256(...parts) {
    const length = parts.reduce((sum, part) => sum + part.length, 0);
    const joined = new Uint8Array(length);
    let offset = 0;
    for (const part of parts) {
      joined.set(part, offset);
      offset += part.length;
    }
    return new Uint8Array(await crypto.subtle.digest('SHA-256', joined));
  }

  const LEAF_PREFIX = new Uint8Array([0x00]);
  const NODE_PREFIX = new Uint8Array([0x01]);
  const leafHash = (chainHash) => sha256(LEAF_PREFIX, chainHash);
  const nodeHash = (left, right) => sha256(NODE_PREFIX, left, right);

  // RFC 9162, 2.1.3.2: the root implied by an inclusion proof, or null when the proof
  // cannot belong to a tree of that size. BigInt: sequence numbers may pass 2^32, where
  // JavaScript's bit operators on numbers stop working.
  async function rootFromInclusionProof(leafIndex, treeSize, leaf, proof) {
    if (leafIndex >= treeSize) return null;
    let fn = leafIndex;
    let sn = treeSize - 1n;
    let r = leaf;
    for (const p of proof) {
      if (sn === 0n) return null;
      if ((fn & 1n) === 1n || fn === sn) {
        r = await nodeHash(p, r);
        if ((fn & 1n) === 0n) {
          while ((fn & 1n) === 0n && fn !== 0n) {
            fn >>= 1n;
            sn >>= 1n;
          }
        }
      } else {
        r = await nodeHash(r, p);
      }
      fn >>= 1n;
      sn >>= 1n;
    }
    return sn === 0n ? r : null;
  }

  // ----------------------------------------------------------------------------------------
  // Checkpoint signatures (Ed25519), with the key this gateway publishes
  // ----------------------------------------------------------------------------------------

  function loadPublicKey() {
    if (!state.publicKey) {
      state.publicKey = (async () => {
        let pem;
        try {
          pem = await api('/v1/audit/public-key', 'text/plain');
        } catch (error) {
          return { key: null, keyId: null, reason: `public key unavailable (${error.message})` };
        }
        const body = pem
          .replace(/-----BEGIN PUBLIC KEY-----/, '')
          .replace(/-----END PUBLIC KEY-----/, '')
          .replace(/\s+/g, '');
        const der = base64ToBytes(body);
        // Ed25519 SubjectPublicKeyInfo: a fixed 12-byte header, then the raw 32-byte key.
        const keyId = bytesToHex(await sha256(der.slice(der.length - 32))).slice(0, 16);
        try {
          const key = await crypto.subtle.importKey('spki', der, { name: 'Ed25519' }, false, [
            'verify',
          ]);
          return { key, keyId, reason: null };
        } catch (error) {
          return { key: null, keyId, reason: `this browser cannot check Ed25519 (${error.name})` };
        }
      })();
    }
    return state.publicKey;
  }

  // The timestamp as signed: RFC 3339 in UTC with exactly nine fraction digits.
  function canonicalTimestamp(text) {
    const match = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(?:Z|\+00:00)$/.exec(text);
    if (!match) return null;
    return `${match[1]}.${(match[2] || '').padEnd(9, '0')}Z`;
  }

  // {ok: true|false|null, text}: null when the signature could not be checked here.
  async function checkCheckpointSignature(checkpoint) {
    const { key, keyId, reason } = await loadPublicKey();
    if (keyId && checkpoint.key_id !== keyId) {
      return { ok: false, text: `signed by key ${checkpoint.key_id}, not this gateway's ${keyId}` };
    }
    if (!key) return { ok: null, text: `signature not checked: ${reason}` };
    const timestamp = canonicalTimestamp(checkpoint.timestamp);
    if (!timestamp) {
      return { ok: null, text: `signature not checked: timestamp ${checkpoint.timestamp} not UTC` };
    }
    const message =
      `countersign-checkpoint/v1\n${checkpoint.key_id}\n${checkpoint.tree_size}\n` +
      `${checkpoint.root_hash}\n${timestamp}\n`;
    const valid = await crypto.subtle.verify(
      { name: 'Ed25519' },
      key,
      base64ToBytes(checkpoint.signature),
      new TextEncoder().encode(message),
    );
    return valid
      ? { ok: true, text: `Ed25519 signature by key ${keyId} valid` }
      : { ok: false, text: `the checkpoint's signature does not verify with key ${keyId}` };
  }

  // {status: 'verified'|'pending'|'failed', text}
  async function verifyProof(record, proof) {
    if (!proof) return { status: 'pending', text: 'pending (no checkpoint yet)' };
    const failed = (why) => ({ status: 'failed', text: `FAILED: ${why}` });
    try {
      const checkpoint = proof.checkpoint;
      if (!checkpoint) return failed('the proof names no checkpoint');
      const leafIndex = BigInt(proof.leaf_index);
      const treeSize = BigInt(proof.tree_size);
      if (leafIndex !== BigInt(record.sequence) - 1n) {
        return failed(`leaf index ${leafIndex} is not record sequence ${record.sequence} − 1`);
      }
      if (BigInt(checkpoint.tree_size) !== treeSize) {
        return failed(`proof for tree size ${treeSize}, checkpoint of ${checkpoint.tree_size}`);
      }
      // The leaf is recomputed from the record's own chain hash, not taken on trust.
      const leaf = await leafHash(hexToBytes(record.hash));
      if (bytesToHex(leaf) !== String(proof.leaf_hash).toLowerCase()) {
        return failed(`leaf hash ${proof.leaf_hash} is not SHA-256(0x00 ‖ record hash)`);
      }
      const path = proof.inclusion.map(hexToBytes);
      const root = await rootFromInclusionProof(leafIndex, treeSize, leaf, path);
      if (root === null) return failed(`a proof of ${path.length} hashes cannot fit this tree`);
      const rootHex = bytesToHex(root);
      if (rootHex !== String(checkpoint.root_hash).toLowerCase()) {
        return failed(`recomputed root ${rootHex} ≠ checkpoint root ${checkpoint.root_hash}`);
      }
      const signature = await checkCheckpointSignature(checkpoint);
      if (signature.ok === false) return failed(signature.text);
      return {
        status: 'verified',
        text:
          `verified against checkpoint ${formatUtc(checkpoint.timestamp)} ` +
          `(tree size ${treeSize}): root ${rootHex.slice(0, 16)}… recomputed from ` +
          `${path.length} proof hashes; ${signature.text}`,
      };
    } catch (error) {
      return failed(error.message);
    }
  }

  // ----------------------------------------------------------------------------------------
  // Search
  // ----------------------------------------------------------------------------------------

  function queryFromForm() {
    const form = $('search-form');
    const params = new URLSearchParams();
    for (const element of form.elements) {
      if (!element.name) continue;
      let value = element.value.trim();
      if (!value) continue;
      if (element.name === 'from' || element.name === 'to') value = localInputToRfc3339(value);
      if (element.name === 'currency') value = value.toUpperCase();
      if (element.name === 'subject_fingerprint') value = value.toLowerCase();
      params.set(element.name, value);
    }
    return params;
  }

  function shortId(id) {
    const text = String(id || '');
    return text.length > 8 ? `…${text.slice(-8)}` : text;
  }

  function amountOf(record) {
    const input = record.masked_input || {};
    const holder = input.transfer && typeof input.transfer === 'object' ? input.transfer : input;
    if (holder.amount === undefined) return '';
    return holder.currency ? `${holder.amount} ${holder.currency}` : String(holder.amount);
  }

  function renderRows(records) {
    const body = $('results-body');
    body.replaceChildren();
    for (const record of records) {
      const row = el('tr', {
        tabindex: '0',
        'data-record-id': record.record_id,
        'data-outcome': record.outcome,
        'data-sequence': String(record.sequence),
      });
      if (record.record_id === state.selectedRecordId) row.classList.add('selected');
      const subject = record.subject || {};
      const cells = [
        [String(record.sequence), 'number mono'],
        [formatUtc(record.timestamp), 'mono'],
        [record.kind, ''],
        [record.action, 'mono'],
        null, // outcome badge
        [amountOf(record), 'number mono'],
        [subject.common_name || subject.fingerprint_sha256 || '', ''],
        // UUIDv7 ids share their leading (time) digits; the trailing ones tell them apart.
        [shortId(record.decision_id), 'mono'],
        [record.bundle_revision || '', 'mono'],
      ];
      for (const cell of cells) {
        if (cell === null) {
          const td = el('td');
          td.append(el('span', { class: `badge outcome-${record.outcome}` }, record.outcome));
          row.append(td);
        } else {
          row.append(el('td', cell[1] ? { class: cell[1] } : {}, cell[0]));
        }
      }
      row.lastChild.previousSibling.title = record.decision_id || '';
      const open = () => openRecord(record.record_id);
      row.addEventListener('click', open);
      row.addEventListener('keydown', (event) => {
        if (event.key === 'Enter' || event.key === ' ') {
          event.preventDefault();
          open();
        }
      });
      body.append(row);
    }
  }

  async function loadPage(after) {
    const status = $('search-status');
    const params = new URLSearchParams(state.query);
    if (after !== null) params.set('after', String(after));
    setStatus(status, 'Searching…');
    $('search-button').disabled = true;
    $('next-page').disabled = true;
    try {
      const answer = await api(`/v1/audit/records?${params}`);
      const records = answer.records || [];
      state.page = after === null ? 1 : state.page + 1;
      state.nextAfter = answer.next_after ?? null;
      renderRows(records);
      const range = records.length
        ? ` (sequences ${records[0].sequence}–${records[records.length - 1].sequence})`
        : '';
      const more = state.nextAfter !== null ? 'more on the next page' : 'last page';
      setStatus(status, `Page ${state.page}: ${records.length} records${range}; ${more}.`);
    } catch (error) {
      setStatus(status, `Search failed: ${error.message}`, true);
    } finally {
      $('search-button').disabled = false;
      $('next-page').disabled = state.nextAfter === null;
    }
  }

  async function search(event) {
    if (event) event.preventDefault();
    try {
      state.query = queryFromForm();
    } catch (error) {
      setStatus($('search-status'), error.message, true);
      return;
    }
    state.nextAfter = null;
    await loadPage(null);
    // The chart follows the search's time range; redrawn only when that changed, since
    // every stats call is an audited query too.
    if (searchedRange() !== state.chartRange) loadStats();
  }

  function searchedRange() {
    return state.query ? `${state.query.get('from') ?? ''}|${state.query.get('to') ?? ''}` : '|';
  }

  // ----------------------------------------------------------------------------------------
  // Record detail
  // ----------------------------------------------------------------------------------------

  function pretty(value) {
    return value === undefined ? '' : JSON.stringify(value, null, 2);
  }

  async function openRecord(recordId) {
    state.selectedRecordId = recordId;
    for (const row of $('results-body').rows) {
      row.classList.toggle('selected', row.dataset.recordId === recordId);
    }
    const detail = $('detail');
    const proofStatus = $('proof-status');
    detail.hidden = false;
    detail.dataset.recordId = recordId;
    proofStatus.dataset.status = 'checking';
    proofStatus.textContent = 'Loading the record…';
    $('detail-fields').replaceChildren();
    $('detail-input').textContent = '';
    $('detail-result').textContent = '';
    $('detail-proof-json').textContent = '';
    let answer;
    try {
      answer = await api(`/v1/audit/records/${encodeURIComponent(recordId)}`);
    } catch (error) {
      proofStatus.dataset.status = 'failed';
      proofStatus.textContent = `Could not load the record: ${error.message}`;
      return;
    }
    if (state.selectedRecordId !== recordId) return; // another record was opened meanwhile
    const record = answer.record;
    const subject = record.subject || {};
    $('detail-heading').textContent = `Record ${record.sequence}`;
    const fields = [
      ['Sequence', record.sequence],
      ['Record id', record.record_id],
      ['Time (UTC)', formatUtc(record.timestamp)],
      ['Kind', record.kind],
      ['Action', record.action],
      ['Outcome', record.outcome],
      ['Decision id', record.decision_id],
      ['Subject', subject.common_name || ''],
      ['Subject fingerprint', subject.fingerprint_sha256 || ''],
      ['Subject roles', (subject.roles || []).join(', ')],
      ['Source address', record.source_address],
      ['Bundle revision', record.bundle_revision],
      ['Redaction', pretty(record.redaction)],
      ['Previous hash', record.previous_hash],
      ['Hash', record.hash],
    ];
    const list = $('detail-fields');
    for (const [name, value] of fields) {
      list.append(el('dt', {}, name), el('dd', { class: /hash|id/i.test(name) ? 'mono' : '' }, String(value ?? '')));
    }
    $('detail-input').textContent = pretty(record.masked_input);
    $('detail-result').textContent = pretty(record.result);
    $('detail-proof-json').textContent = pretty(answer.proof);
    proofStatus.textContent = 'Checking the inclusion proof…';
    const verdict = await verifyProof(record, answer.proof);
    if (state.selectedRecordId !== recordId) return;
    proofStatus.dataset.status = verdict.status;
    proofStatus.textContent = verdict.text;
  }

  // ----------------------------------------------------------------------------------------
  // Chart: stacked bars per time bucket, drawn as SVG
  // ----------------------------------------------------------------------------------------

  // One slot per bucket of [from, to), the empty ones included, so the time axis is linear
  // and spans the whole range asked for; only the buckets with decisions when that would be
  // too many bars to draw.
  function fillBuckets(buckets, bucket, range) {
    const step = BUCKET_SECONDS[bucket] * 1000;
    const sorted = buckets
      .map((entry) => ({ ...entry, time: new Date(entry.start).getTime() }))
      .filter((entry) => !Number.isNaN(entry.time))
      .sort((a, b) => a.time - b.time);
    if ((range.to - range.from) / step > CHART_BARS_MAX) return sorted;
    const byTime = new Map(sorted.map((entry) => [entry.time, entry]));
    const filled = [];
    for (let time = range.from; time < range.to; time += step) {
      filled.push(byTime.get(time) || { start: new Date(time).toISOString(), time });
    }
    return filled;
  }

  // The chart's [from, to) in milliseconds, on bucket boundaries: the search's time range
  // when it has one, else the last DEFAULT_BUCKETS buckets up to the current one.
  function statsRange(bucket) {
    const step = BUCKET_SECONDS[bucket] * 1000;
    const searched = (name) => (state.query && state.query.has(name) ? Date.parse(state.query.get(name)) : NaN);
    let to = searched('to');
    if (Number.isNaN(to)) to = (Math.floor(Date.now() / step) + 1) * step;
    let from = searched('from');
    if (Number.isNaN(from)) from = to - DEFAULT_BUCKETS[bucket] * step;
    return { from: Math.floor(from / step) * step, to: Math.ceil(to / step) * step };
  }

  function niceStep(maximum, ticks) {
    const raw = Math.max(1, maximum) / ticks;
    const magnitude = 10 ** Math.floor(Math.log10(raw));
    for (const factor of [1, 2, 5, 10]) {
      if (raw <= factor * magnitude) return Math.max(1, factor * magnitude);
    }
    return 10 * magnitude;
  }

  function bucketLabel(time, bucket) {
    const iso = new Date(time).toISOString();
    return bucket === 'day' ? iso.slice(0, 10) : `${iso.slice(5, 10)} ${iso.slice(11, 16)}`;
  }

  function renderChart(rawBuckets, bucket, range) {
    const container = $('chart-container');
    const buckets = fillBuckets(rawBuckets, bucket, range);
    const width = Math.max(640, Math.min(container.clientWidth || 960, 1360));
    const height = 280;
    const margin = { top: 16, right: 150, bottom: 56, left: 56 };
    const plotWidth = width - margin.left - margin.right;
    const plotHeight = height - margin.top - margin.bottom;
    const total = (entry) => OUTCOMES.reduce((sum, outcome) => sum + (Number(entry[outcome]) || 0), 0);
    const maximum = buckets.reduce((max, entry) => Math.max(max, total(entry)), 0);
    const step = niceStep(maximum, 5);
    const top = Math.max(step, Math.ceil(maximum / step) * step);
    const y = (count) => margin.top + plotHeight - (count / top) * plotHeight;

    const chart = svg('svg', {
      id: 'outcome-chart',
      width,
      height,
      viewBox: `0 0 ${width} ${height}`,
      role: 'img',
      'aria-label': `Decisions per ${bucket} by outcome`,
      'data-bucket': bucket,
      'data-buckets': buckets.length,
    });

    // Y axis: grid lines and counts.
    const yAxis = svg('g', { id: 'chart-y-axis', class: 'axis' });
    for (let value = 0; value <= top; value += step) {
      const lineY = y(value);
      yAxis.append(
        svg('line', { class: 'grid-line', x1: margin.left, x2: margin.left + plotWidth, y1: lineY, y2: lineY }),
        svg('text', { x: margin.left - 6, y: lineY + 4, 'text-anchor': 'end' }, String(value)),
      );
    }
    yAxis.append(
      svg('line', { x1: margin.left, x2: margin.left, y1: margin.top, y2: margin.top + plotHeight }),
      svg(
        'text',
        {
          class: 'axis-title',
          transform: `translate(14 ${margin.top + plotHeight / 2}) rotate(-90)`,
          'text-anchor': 'middle',
        },
        'decisions',
      ),
    );
    chart.append(yAxis);

    // Bars: one stack per bucket, outcomes bottom-up in legend order.
    const bars = svg('g', { id: 'chart-bars' });
    const slot = buckets.length ? plotWidth / buckets.length : plotWidth;
    const barWidth = Math.max(1, Math.min(56, slot * 0.7));
    buckets.forEach((entry, index) => {
      const x = margin.left + index * slot + (slot - barWidth) / 2;
      let base = 0;
      for (const outcome of OUTCOMES) {
        const count = Number(entry[outcome]) || 0;
        if (count <= 0) continue;
        const rect = svg('rect', {
          class: `bar outcome-${outcome}`,
          x: x.toFixed(1),
          y: y(base + count).toFixed(1),
          width: barWidth.toFixed(1),
          height: (y(base) - y(base + count)).toFixed(1),
          fill: OUTCOME_COLOURS[outcome],
          'data-outcome': outcome,
          'data-count': count,
          'data-start': entry.start,
        });
        rect.append(svg('title', {}, `${bucketLabel(entry.time, bucket)} UTC · ${outcome}: ${count}`));
        bars.append(rect);
        base += count;
      }
    });
    chart.append(bars);

    // X axis: at most one label per ~80 px.
    const xAxis = svg('g', { id: 'chart-x-axis', class: 'axis' });
    const baseline = margin.top + plotHeight;
    xAxis.append(svg('line', { x1: margin.left, x2: margin.left + plotWidth, y1: baseline, y2: baseline }));
    const every = Math.max(1, Math.ceil(buckets.length / Math.max(1, Math.floor(plotWidth / 80))));
    buckets.forEach((entry, index) => {
      if (index % every !== 0) return;
      const x = margin.left + index * slot + slot / 2;
      xAxis.append(
        svg('line', { x1: x, x2: x, y1: baseline, y2: baseline + 4 }),
        svg('text', { x, y: baseline + 18, 'text-anchor': 'middle' }, bucketLabel(entry.time, bucket)),
      );
    });
    xAxis.append(
      svg(
        'text',
        { class: 'axis-title', x: margin.left + plotWidth / 2, y: height - 10, 'text-anchor': 'middle' },
        `time (UTC), per ${bucket}`,
      ),
    );
    chart.append(xAxis);

    if (!buckets.length) {
      chart.append(
        svg(
          'text',
          { id: 'chart-empty', x: margin.left + plotWidth / 2, y: margin.top + plotHeight / 2, 'text-anchor': 'middle' },
          'no decisions in this range',
        ),
      );
    }

    // Legend: every outcome with its colour and its total in the range.
    const legend = svg('g', { id: 'chart-legend', class: 'legend' });
    OUTCOMES.forEach((outcome, index) => {
      const sum = buckets.reduce((acc, entry) => acc + (Number(entry[outcome]) || 0), 0);
      const itemY = margin.top + 8 + index * 22;
      const item = svg('g', { class: `legend-item outcome-${outcome}`, 'data-outcome': outcome });
      item.append(
        svg('rect', { x: width - margin.right + 20, y: itemY - 10, width: 14, height: 14, fill: OUTCOME_COLOURS[outcome] }),
        svg('text', { x: width - margin.right + 40, y: itemY + 1 }, `${outcome} (${sum})`),
      );
      legend.append(item);
    });
    chart.append(legend);

    container.replaceChildren(chart);
  }

  async function loadStats() {
    const status = $('chart-status');
    state.chartRange = searchedRange();
    let bucket = $('stats-bucket').value;
    let range = statsRange(bucket);
    let note = '';
    if (bucket === 'hour' && (range.to - range.from) / 3_600_000 > HOUR_BUCKETS_MAX) {
      bucket = 'day';
      $('stats-bucket').value = bucket;
      range = statsRange(bucket);
      note = ' (by day: the range is longer than 31 days)';
    }
    if (range.to <= range.from) {
      setStatus(status, 'Chart unavailable: the time range is empty', true);
      return;
    }
    const params = new URLSearchParams({
      from: new Date(range.from).toISOString(),
      to: new Date(range.to).toISOString(),
      bucket,
    });
    setStatus(status, 'Loading…');
    try {
      const answer = await api(`/v1/audit/stats?${params}`);
      const buckets = answer.buckets || [];
      renderChart(buckets, bucket, range);
      const decisions = buckets.reduce(
        (sum, entry) => sum + OUTCOMES.reduce((acc, outcome) => acc + (Number(entry[outcome]) || 0), 0),
        0,
      );
      setStatus(
        status,
        `${decisions} decisions from ${formatUtc(params.get('from'))} to ` +
          `${formatUtc(params.get('to'))}, per ${bucket}${note}.`,
      );
    } catch (error) {
      setStatus(status, `Chart unavailable: ${error.message}`, true);
    }
  }

  // ----------------------------------------------------------------------------------------

  function start() {
    $('search-form').addEventListener('submit', search);
    $('search-form').addEventListener('reset', () => {
      state.query = null;
      if (searchedRange() !== state.chartRange) loadStats();
    });
    $('next-page').addEventListener('click', () => {
      if (state.nextAfter !== null) loadPage(state.nextAfter);
    });
    $('stats-bucket').addEventListener('change', loadStats);
    $('stats-refresh').addEventListener('click', loadStats);
    $('detail-close').addEventListener('click', () => {
      $('detail').hidden = true;
      state.selectedRecordId = null;
      for (const row of $('results-body').rows) row.classList.remove('selected');
    });
    loadStats();
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
