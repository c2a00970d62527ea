"""HTTP handlers, one module per domain; ``web.routes`` wires them to paths."""
