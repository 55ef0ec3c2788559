"""The echo system, its TAP driver swapped for one that loses the first TCP echo segment."""
from sddf.apps.systems import echo
from sddf.system import SystemDescription


def system() -> SystemDescription:
    sdf = echo.system()
    (driver,) = [pd for pd in sdf.pds if pd.name == "eth_driver"]
    driver.program = "components.lossy:DropFirstTcpData"
    return sdf
