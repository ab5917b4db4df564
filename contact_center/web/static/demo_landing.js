// The demo landing page's own behaviour (a file: the Content-Security-Policy allows no inline script).
(function () {
  var city = document.getElementById("city");
  var stored = null;
  try { stored = localStorage.getItem("cc_demo_region"); } catch (e) {}
  if (stored) city.value = stored;
  document.getElementById("form-region").value = city.value;
  city.addEventListener("change", function () {
    document.getElementById("form-region").value = city.value;
    if (window.ccTracking) window.ccTracking.setRegion(city.value);
  });
  document.getElementById("lead-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var out = document.getElementById("form-result");
    fetch(this.action, { method: "POST", body: new URLSearchParams(new FormData(this)) })
      .then(function (r) { out.textContent = r.ok ? "Спасибо! Мы перезвоним." : "Ошибка " + r.status; })
      .catch(function () { out.textContent = "Нет связи с сервером"; });
  });
})();
