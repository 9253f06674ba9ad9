"""ringps topology: discovery, presets, cost model and the `auto` strategy. See DESIGN.md."""
