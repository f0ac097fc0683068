// Starts ReDoc on the document the page names. It lives in a file of its own, not in
// the page, so that the page's Content-Security-Policy can forbid inline script.
(function () {
  "use strict";
  var root = document.getElementById("redoc");
  Redoc.init(root.dataset.openapiUrl, {}, root);
})();
