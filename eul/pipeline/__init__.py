"""The pipeline's steps as plain functions: plan, train, fuse, evaluate, register, promote,
purge, audit."""
