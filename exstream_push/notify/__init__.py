"""One notify pipeline for every flow that pushes: segment, frequency cap, quiet hours, render, send."""
