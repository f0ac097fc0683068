"""Email: an outbox written in the same transaction as what it announces, a sender that
delivers it over SMTP (or into a folder), and the messages themselves."""
