"""The bundled echo system with restarts enough for the fault tests (each of its PDs restarts on a fault)."""
from sddf.apps.systems import echo
from sddf.system import SystemDescription

FAULT_TEST_RESTARTS = 1000


def system() -> SystemDescription:
    sdf = echo.system()
    for pd in sdf.pds:
        pd.max_restarts = FAULT_TEST_RESTARTS
    return sdf
