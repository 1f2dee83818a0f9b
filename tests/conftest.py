import uvloop


def pytest_asyncio_loop_factories(config, item):
    # The daemons run on uvloop; so do their tests.
    return {"uvloop": uvloop.new_event_loop}
