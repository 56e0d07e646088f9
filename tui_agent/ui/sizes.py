"""The terminal sizes at which the layout changes, defined once (the app sets its layout
classes by them; the run pane cuts its text by them before those classes are set)."""

NARROW = 110  # columns: a slimmer history pane; the run header becomes three cut lines
STACKED = 150  # columns: below, the agent state goes under the timeline
SHORT = 32  # rows: a compact approval request and header, so the newest steps stay in view
# columns: below, the footer of a run waiting for approval is full with its decision keys,
# and `m` (a message) leaves it (the key still works; the command palette lists it)
CROWDED_FOOTER = 86
