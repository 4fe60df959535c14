// samlgate console: streams the CSV import's file to the gateway and shows
// the upload's and the import's progress. Without it the form still works
// (the file goes inside the form, up to 2 MiB).
(function () {
  "use strict";
  var form = document.getElementById("import");
  if (!form || !window.XMLHttpRequest || !window.fetch || !window.FormData) {
    return;
  }
  form.addEventListener("submit", function (ev) {
    var file = document.getElementById("file").files[0];
    if (!file) {
      return;
    }
    ev.preventDefault();
    var data = new FormData(form);
    var q = new URLSearchParams();
    q.set("license", data.get("license") || "");
    q.set("feature", data.get("feature") || "");
    if (data.get("sso")) {
      q.set("sso", "1");
    }
    if (data.get("update_existing")) {
      q.set("update_existing", "1");
    }
    var box = document.getElementById("progress");
    var bar = document.getElementById("bar");
    var phase = document.getElementById("phase");
    var rows = document.getElementById("rows");
    var button = form.querySelector("button[type=submit]");
    box.hidden = false;
    button.disabled = true;
    var fail = function (why) {
      phase.textContent = why;
      button.disabled = false;
    };
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.getAttribute("data-upload") + "?" + q.toString());
    xhr.setRequestHeader("X-CSRF-Token", data.get("csrf"));
    xhr.setRequestHeader("Content-Type", "text/csv");
    xhr.upload.onprogress = function (e) {
      if (e.lengthComputable) {
        bar.value = Math.round((e.loaded * 100) / e.total);
      }
    };
    xhr.onload = function () {
      var ans = {};
      try {
        ans = JSON.parse(xhr.responseText);
      } catch (e) {
        ans = {};
      }
      if (xhr.status !== 202) {
        fail("Refused: " + (ans.message || xhr.status));
        return;
      }
      phase.textContent = "Importing";
      bar.value = 0;
      var poll = function () {
        fetch(ans.status, { credentials: "same-origin" })
          .then(function (r) {
            return r.json();
          })
          .then(function (s) {
            bar.value = s.size ? Math.round((s.read * 100) / s.size) : 0;
            rows.textContent = s.rows + " rows read";
            if (s.state === "running") {
              setTimeout(poll, 500);
            } else {
              window.location = ans.report;
            }
          })
          .catch(function () {
            setTimeout(poll, 1000);
          });
      };
      poll();
    };
    xhr.onerror = function () {
      fail("The upload failed");
    };
    xhr.send(file);
  });
})();
