// Small conveniences on top of pages that work without JavaScript.
(function () {
  "use strict";

  // After a refused form, take the keyboard to the problem: the error summary if the
  // page has one, otherwise the first field marked invalid.
  function focusFirstProblem() {
    var target = document.querySelector("[data-focus]") || document.querySelector("[aria-invalid='true']");
    if (target) target.focus();
  }

  // One click, one submission: a second click while the first is on its way is ignored.
  function guardDoubleSubmit() {
    document.addEventListener("submit", function (event) {
      var form = event.target;
      if (form.dataset.submitting === "true") {
        event.preventDefault();
        return;
      }
      form.dataset.submitting = "true";
      // Disabled after the submission has started, so the button's own value still goes.
      window.setTimeout(function () {
        form.querySelectorAll("button[type='submit']").forEach(function (button) {
          button.disabled = true;
        });
      }, 0);
    });
    // Coming back with the Back button shows the page from cache: make it usable again.
    window.addEventListener("pageshow", function () {
      document.querySelectorAll("form[data-submitting='true']").forEach(function (form) {
        form.dataset.submitting = "false";
        form.querySelectorAll("button[type='submit']").forEach(function (button) {
          button.disabled = false;
        });
      });
    });
  }

  // Checkout: the amount box matters only when "a chosen amount" is picked.
  function linkChosenAmount() {
    var amount = document.querySelector("[data-chosen-amount]");
    if (!amount) return;
    var radios = document.querySelectorAll("input[name='use_balance']");
    function update() {
      var chosen = document.querySelector("input[name='use_balance']:checked");
      amount.disabled = !(chosen && chosen.value === "amount");
    }
    radios.forEach(function (radio) { radio.addEventListener("change", update); });
    update();
  }

  document.addEventListener("DOMContentLoaded", function () {
    focusFirstProblem();
    guardDoubleSubmit();
    linkChosenAmount();
  });
})();
