"""`launchkit ab`: ApacheBench's flags in, launchkit's load generator, ab's report on stdout."""

from __future__ import annotations

import sys
from typing import Any

import click

from launchkit.cli.options import CONTEXT

AB_CONTEXT = {**CONTEXT, "help_option_names": ["--help"]}  # ab's -h is its help too, but -H is a header


@click.command("ab", context_settings=AB_CONTEXT)
@click.argument("url")
@click.option("-n", "requests", metavar="requests", help="Number of requests to perform (ab reads 100.0 as 100).")
@click.option("-c", "concurrency", metavar="concurrency", help="Number of multiple requests to make at a time.")
@click.option("-t", "time_limit", metavar="timelimit", help="Seconds to max. to spend on benchmarking "
              "(implies -n 50000).")
@click.option("-s", "timeout", metavar="timeout", help="Seconds to max. wait for each response (default 30).")
@click.option("-k", "keep_alive", is_flag=True, help="Use HTTP KeepAlive (without it, a connection per request).")
@click.option("-p", "post_file", metavar="postfile", help="File containing data to POST; remember -T.")
@click.option("-u", "put_file", metavar="putfile", help="File containing data to PUT; remember -T.")
@click.option("-T", "content_type", metavar="content-type", help="Content-type header for POST/PUT data "
              "(default text/plain).")
@click.option("-H", "headers", multiple=True, metavar="attribute", help='Add a header, e.g. "Authorization: '
              'Bearer KEY"; repeatable. Credentials never appear in the report.')
@click.option("-m", "method", metavar="method", help="Method name (default GET; POST with -p, PUT with -u).")
@click.option("-l", "variable_length", is_flag=True, help="Accept variable document length (always on here).")
@click.option("-r", "keep_going", is_flag=True, help="Don't exit on socket receive errors (always on here).")
@click.option("-q", "quiet", is_flag=True, help="Do not show progress (none is shown here anyway).")
@click.option("-v", "verbosity", metavar="verbosity", help="Accepted for ab's command lines; the report is the same.")
def ab(url: str, **params: Any) -> None:
    """Load-test URL with ab's command line; ab's report on stdout, so scripts that read ab's output
    (TorchServe's benchmark-ab.py among them) read this one unchanged.

    \b
    Examples:
      launchkit ab -c 10 -s 300 -n 1000 -k -p kitten.jpg -T image/jpeg http://127.0.0.1:8080/predictions/resnet18
      launchkit ab -n 100.0 -c 4 -H "Authorization: Bearer KEY" http://127.0.0.1:8080/ping

    Differences from ab (the report says them too): times are those of the 2xx answers, and
    connections are opened before timing. Exit status: 0 when the run finished (as ab, whatever the
    answers), 1 when no request was answered, 2 for a bad command line.
    """
    from launchkit.bench.ab import plan, report, run

    try:
        ab_run = plan(url, params["requests"], params["concurrency"], params["time_limit"], params["timeout"],
                      params["keep_alive"], params["post_file"], params["put_file"], params["content_type"],
                      params["headers"], params["method"])
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    try:
        samples, body_size = run(ab_run)
    except ConnectionError as error:  # as ab: "apr_socket_connect(): Connection refused", exit 1
        click.echo(f"launchkit ab: no request was answered: {error}", err=True)
        sys.exit(1)
    click.echo(report(ab_run, samples, body_size), nl=False)
    if not samples.statuses:
        click.echo(f"launchkit ab: no request was answered ({', '.join(samples.errors) or 'no answer'})", err=True)
        sys.exit(1)
