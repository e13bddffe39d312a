"""Self-contained HTML reports: inline SVG plots, base64 thumbnails, no external assets."""
