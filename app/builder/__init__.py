"""The model builder. ``meta`` and ``recipe`` are plain data and import no torch; the torch parts
are loaded lazily so the API process can read the architecture table without paying for torch."""
