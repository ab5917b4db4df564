"""Region routing: which managers serve which region, how calls and website requests are
distributed among them, the manual queue, and the website requests themselves."""
