"""The fronts: the fpstream command line, the websocket server and its client (no torch),
speaker playback and the browser page. They import the engine; the engine never imports them."""
