-- Authenticated GET; the path comes from the wrk URL, the token from FABRICA_TOKEN.
wrk.headers["Authorization"] = "Bearer " .. os.getenv("FABRICA_TOKEN")
