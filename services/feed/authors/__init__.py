"""What feed knows about users: a typed client for the users service's internal API and a Redis
profile cache in front of it. No models: users own user data; feed only caches summaries."""
