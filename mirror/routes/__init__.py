"""The only modules that touch aiohttp request and response objects."""
