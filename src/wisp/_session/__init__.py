"""The client side of serving, deploying and running an app, shared by the SDK (`stub.serve()`,
`stub.run()`) and the CLI (`wisp serve/deploy/run`), so that the SDK never imports the CLI:
importing the script in a fresh interpreter (`inspect`, `package`), sending it with its files and
showing its image builds (`push`, `progress`), following edits (`serve`), holding an app for a
block (`run`), and what they print (`output`)."""
