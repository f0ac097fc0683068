"""The demo: a pretend shop and the data `giftcard serve --demo` starts with.

Its test card is pretend money, so a real deployment never serves it: the app mounts
`pages` only when `GIFTCARD_DEMO_STORE=true` (SPEC §7), and nothing else in giftcard
imports this package. It plays a store's back end with the core's own use cases:

  store.py   the catalog, carts priced on the server, orders paid through payments.py
  pages.py   the store's pages under /store, and `install` to mount them
  seed.py    the demo shopper, staff member, API key and codes of `serve --demo`
"""
