// The channel's recordings under the live player: newest first, each played in a plain
// <video> from /recordings/<channel>/<file> (the server answers byte ranges, so it seeks),
// or downloaded. The list refreshes while the page is open.
import { recordings } from './api.js';

const channel = location.pathname.split('/').filter(Boolean).pop();
const section = document.getElementById('recordings');
const list = document.getElementById('recording-list');
const replay = document.getElementById('replay');
window.itgRecordings = { list: [], play };

function duration(s) {
  const t = Math.round(s);
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const sec = String(t % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}

function size(bytes) {
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(1)} GB` : `${(bytes / 1e6).toFixed(1)} MB`;
}

/** Plays one recording in the page's player. */
function play(url) {
  replay.hidden = false;
  const item = window.itgRecordings.list.find((r) => r.url === url);
  if (item?.poster) replay.poster = item.poster;
  replay.src = url;
  for (const li of list.children) li.classList.toggle('playing', li.dataset.url === url);
  return replay.play().catch(() => {});
}

function render(items) {
  window.itgRecordings.list = items;
  section.hidden = items.length === 0;
  list.replaceChildren(...items.map((r) => {
    const li = document.createElement('li');
    li.dataset.url = r.url;
    const when = document.createElement('span');
    when.className = 'when';
    when.textContent = `${new Date(r.start).toLocaleString()} · ${duration(r.duration_s)} · ${size(r.size)}`
      + (r.recording ? ' · recording now' : '');
    const watch = document.createElement('button');
    watch.type = 'button';
    watch.textContent = 'Play';
    watch.addEventListener('click', () => play(r.url));
    const download = document.createElement('a');
    download.href = r.url;
    download.download = `channel-${r.channel}-${r.file}`;
    download.textContent = 'Download';
    // The poster (the recording's first picture), when the server made one.
    const poster = document.createElement('img');
    poster.className = 'poster';
    poster.alt = '';
    poster.width = 96;
    poster.height = 54;
    if (r.poster) poster.src = r.poster; else poster.hidden = true;
    li.append(poster, when, watch, download);
    if (replay.src.endsWith(r.url)) li.classList.add('playing');
    return li;
  }));
}

async function refresh() {
  try {
    render(await recordings(channel));
  } catch (_) {
    // The list is an extra: the live player goes on without it.
  }
}

refresh();
setInterval(refresh, 15000);
