"""Charts group constructs by concern; each chart is one output folder."""
