// Auto-refresh every data-refresh seconds, keeping the scroll position and
// never while a form field is being edited.
(() => {
  const key = "mlmon-scroll:" + location.pathname + location.search;
  const y = sessionStorage.getItem(key);
  if (y !== null) { window.scrollTo(0, Number(y)); sessionStorage.removeItem(key); }
  const every = Number(document.body.dataset.refresh || 0);
  if (!(every > 0)) return;
  const tick = () => {
    const a = document.activeElement;
    if (a && /^(INPUT|TEXTAREA|SELECT)$/.test(a.tagName)) { setTimeout(tick, 5000); return; }
    sessionStorage.setItem(key, String(window.scrollY));
    location.reload();
  };
  setTimeout(tick, every * 1000);
})();
