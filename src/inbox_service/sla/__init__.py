"""SLA policies, business-time due dates and the timers that warn and breach."""
