"""Auto-assignment: per-inbox policies (off, round_robin, least_loaded) and the queue of
conversations waiting for an owner. Manual assignment is `conversations.assign`."""
