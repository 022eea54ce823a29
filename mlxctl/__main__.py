from mlxctl.cli import main

main()
