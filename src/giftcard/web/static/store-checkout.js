// The demo store's checkout: the order summary's split (what the gift card balance pays,
// what is left for the card) follows the shopper's choice as they make it. Without
// JavaScript the Recalculate button asks the server for the same figures.
(function () {
  "use strict";

  var CHECK = "Check the amount";

  function setUp() {
    var summary = document.querySelector("[data-split]");
    if (!summary) return;
    var total = Number(summary.dataset.total);
    var maxUse = Number(summary.dataset.maxUse);
    var currency = summary.dataset.currency;
    var format = new Intl.NumberFormat(summary.dataset.locale, { style: "currency", currency: currency });
    var exponent = format.resolvedOptions().maximumFractionDigits;
    var balanceCell = summary.querySelector("[data-testid='split-balance']");
    var cardCell = summary.querySelector("[data-testid='split-card']");
    var amountInput = document.querySelector("[data-chosen-amount]");

    function money(minor) {
      return format.format(minor / Math.pow(10, exponent));
    }

    // The typed amount in minor units, or null when checkout would refuse it: digits
    // with at most the currency's decimals, more than zero, no more than may be used.
    function typedAmount() {
      var text = (amountInput ? amountInput.value : "").trim().replace(/^[^\d]+|[^\d]+$/g, "");
      var found = /^(\d{1,12})(?:[.,](\d*))?$/.exec(text);
      if (!found) return null;
      var fraction = found[2] || "";
      if (fraction.length > exponent) return null;
      while (fraction.length < exponent) fraction += "0";
      var minor = Number(found[1]) * Math.pow(10, exponent) + Number(fraction || "0");
      return minor > 0 && minor <= maxUse ? minor : null;
    }

    function update() {
      var chosen = document.querySelector("input[name='use_balance']:checked");
      var choice = chosen ? chosen.value : "max";
      var fromBalance = choice === "none" ? 0 : choice === "amount" ? typedAmount() : maxUse;
      if (fromBalance === null) {
        balanceCell.textContent = CHECK;
        cardCell.textContent = CHECK;
        return;
      }
      balanceCell.textContent = (fromBalance > 0 ? "\u2212" : "") + money(fromBalance);
      cardCell.textContent = money(total - fromBalance);
    }

    document.querySelectorAll("input[name='use_balance']").forEach(function (radio) {
      radio.addEventListener("change", update);
    });
    if (amountInput) amountInput.addEventListener("input", update);
    update();
  }

  document.addEventListener("DOMContentLoaded", setUp);
})();
