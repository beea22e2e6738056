// The channel list: live first, with viewers; refreshes by itself.
import { streams, resolution, escapeHtml } from './api.js';

const list = document.getElementById('channels');
const status = document.getElementById('status');

async function refresh() {
  try {
    const all = await streams();
    list.innerHTML = all.map((s) => `
      <li class="channel ${s.live ? 'live' : 'offline'}">
        <a href="/watch/${s.channel}">
          <span class="badge">${s.live ? 'LIVE' : 'offline'}</span>
          <span class="name">${escapeHtml(s.name)}</span>
          <span class="meta">${s.live ? `${s.viewers} watching · ${resolution(s)}` : ''}</span>
        </a>
      </li>`).join('');
    status.textContent = all.length ? '' : 'No channels yet.';
  } catch (e) {
    status.textContent = `Cannot reach the server (${e.message}); retrying…`;
  }
}

refresh();
setInterval(refresh, 3000);
