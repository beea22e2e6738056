// The channel list: a card per channel, live first, each live one with its thumbnail (a new
// picture every few seconds, swapped in once loaded so nothing flickers), viewers and size.
import { streams, resolution, escapeHtml } from './api.js';

const list = document.getElementById('channels');
const status = document.getElementById('status');
/** The card of each channel, kept across refreshes: only what changed is touched. */
const cards = new Map();

function card(s) {
  let li = cards.get(s.channel);
  if (!li) {
    li = document.createElement('li');
    li.dataset.channel = s.channel;
    li.innerHTML = `
      <a href="/watch/${s.channel}">
        <div class="thumb"><img alt="" hidden><span class="badge"></span></div>
        <span class="name"></span>
        <span class="meta"></span>
      </a>`;
    cards.set(s.channel, li);
  }
  li.className = `channel ${s.live ? 'live' : 'offline'}`;
  li.querySelector('.badge').textContent = s.live ? 'LIVE' : 'offline';
  li.querySelector('.name').innerHTML = escapeHtml(s.name);
  li.querySelector('.meta').textContent = s.live ? `${s.viewers} watching · ${resolution(s)}` : '';
  const img = li.querySelector('img');
  const url = s.live && s.thumbnail ? s.thumbnail : '';
  if (!url) {
    img.hidden = true;
    img.removeAttribute('src');
    delete img.dataset.url;
  } else if (img.dataset.url !== url) {
    // Load the new picture aside; show it once it is there.
    img.dataset.url = url;
    const next = new Image();
    next.onload = () => {
      if (img.dataset.url !== url) return;
      img.src = url;
      img.width = next.naturalWidth;
      img.height = next.naturalHeight;
      img.alt = `${s.name}, live`;
      img.hidden = false;
    };
    next.src = url;
  }
  return li;
}

async function refresh() {
  try {
    const all = await streams();
    const wanted = all.map(card);
    for (const [channel, li] of cards) {
      if (!all.some((s) => s.channel === channel)) { cards.delete(channel); li.remove(); }
    }
    wanted.forEach((li, i) => { if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null); });
    status.textContent = all.length ? '' : 'No channels yet.';
  } catch (e) {
    status.textContent = `Cannot reach the server (${e.message}); retrying…`;
  }
}

refresh();
setInterval(refresh, 3000);
