// The server's JSON API, same origin.

/** All channels, live first. */
export async function streams() {
  const res = await fetch('/api/streams', { cache: 'no-store' });
  if (!res.ok) throw new Error(`API ${res.status}`);
  return (await res.json()).streams;
}

export function resolution(s) {
  return s.width && s.height ? `${s.width}×${s.height}` : '';
}

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

/** A channel's recordings, newest first. */
export async function recordings(channel) {
  const res = await fetch(`/api/recordings?channel=${encodeURIComponent(channel)}`, { cache: 'no-store' });
  if (!res.ok) throw new Error(`API ${res.status}`);
  return (await res.json()).recordings;
}
