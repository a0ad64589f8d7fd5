"""`pyvsadm`: ipvsadm's interface over the pyvs data plane.

options.py parses a command line into a Command, commands.py applies it to a Rules value,
printers.py writes ipvsadm's text formats, cli.py joins them to a Dataplane.
"""
