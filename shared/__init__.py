"""Code every Rehost service uses: settings, bus, envelope, store, auth, errors, telemetry."""
