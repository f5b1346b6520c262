"""The sandbox: a warm helper process that runs untrusted programs, and the executor that drives it."""
