"""inferq's HTTP gateway: the Open Inference Protocol and asynchronous jobs over ``AsyncClient``.

    from gateway.app import create_app
    app = create_app(Settings.from_env())      # or: inferq gateway --port 8000

Imports ``producers`` and ``tasks`` only: never the workers, the operator tools,
TensorFlow or LiteRT. Holds no state: any number of gateways can serve one system.
"""
