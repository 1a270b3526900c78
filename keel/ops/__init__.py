"""Process control: ``keel up``/``down`` (``services``), the Prefect server of one command
(``prefect_server``), the pre-flight check of every backend (``backends``) and throwaway
scaled backends on loopback (``localstack``). Never: trains, registers or validates."""
