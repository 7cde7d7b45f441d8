"""The route step and the router it trains."""
