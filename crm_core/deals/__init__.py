"""Deal pipelines, deals and their stage history."""
